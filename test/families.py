"""The tiny models tests use, one per family and head, and their exported packages."""

from dataclasses import replace

from vla_ros.export.exporter import ExportSpec
from vla_ros.model.config import VLAConfig
from vla_ros.runtime.package.manifest import Normalization

JOINTS = tuple(f'joint{i}' for i in range(1, 6))  # 5 of the 6 model dims: one is padding
WORDS = ['pick', 'up', 'the', 'red', 'cube', 'block']
EXPORT_LOG: dict[str, list[str]] = {}  # the session fixture's export progress, per family


def tiny_configs() -> dict[str, VLAConfig]:
    a1 = VLAConfig.tiny('a1')
    return {
        'evo1': VLAConfig.tiny('evo1'),
        'a1': a1,
        'a1_regression': replace(a1, head=replace(a1.head, type='mlp_regression')),
        'vla_adapter': VLAConfig.tiny('vla_adapter'),
        'edgevla': VLAConfig.tiny('edgevla'),
    }


def export_spec(name: str) -> ExportSpec:
    stats = {'min': [-1.0] * 5, 'max': [2.0] * 5}
    return ExportSpec(name=name, state_names=JOINTS, action_names=JOINTS, dt_s=0.1,
                      state_norm=Normalization('bounds', stats),
                      action_norm=Normalization('bounds', stats), precisions=('fp32', 'fp16'))
