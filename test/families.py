"""The tiny model configurations tests use, one per family and head."""

from dataclasses import replace

from vla_ros.model.config import VLAConfig


def tiny_configs() -> dict[str, VLAConfig]:
    a1 = VLAConfig.tiny('a1')
    return {
        'evo1': VLAConfig.tiny('evo1'),
        'a1': a1,
        'a1_regression': replace(a1, head=replace(a1.head, type='mlp_regression')),
        'vla_adapter': VLAConfig.tiny('vla_adapter'),
        'edgevla': VLAConfig.tiny('edgevla'),
    }
