"""Our checkpoint directory: what `vla-ros export` reads and our training scripts write.

  vla_ros_checkpoint.json  {"vla_config": VLAConfig, "export": the robot-facing description}
  model.safetensors        the state dict (no pickle)
  tokenizer.json           a `tokenizers` file

Converters for published checkpoints (Evo-1, A1, VLA-Adapter, EdgeVLA) write this layout, so
export, benchmarks and the torch reference backend all start from one format.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from vla_ros.export.exporter import ExportSpec
from vla_ros.model.config import VLAConfig
from vla_ros.model.vla import VLA
from vla_ros.runtime.package.manifest import Normalization

META = 'vla_ros_checkpoint.json'


def save_checkpoint(directory: str | Path, model: VLA, spec: ExportSpec, tokenizer) -> Path:
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    export = asdict(spec)
    (d / META).write_text(json.dumps({'vla_config': model.cfg.to_dict(), 'export': export},
                                     indent=1))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(d / 'model.safetensors'))
    tokenizer.save(str(d / 'tokenizer.json'))
    return d


def _norm(data: dict) -> Normalization:
    return Normalization(kind=data['kind'], stats={k: tuple(v) for k, v in data['stats'].items()},
                         clip=data.get('clip', False), mask=tuple(data.get('mask', ())),
                         eps=data.get('eps', 1e-8))


def load_checkpoint(directory: str | Path) -> tuple[VLA, ExportSpec, object]:
    """Rebuilds the model from its own files. Raises FileNotFoundError / ValueError with the
    missing file or bad field named."""
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    d = Path(directory)
    for name in (META, 'model.safetensors', 'tokenizer.json'):
        if not (d / name).is_file():
            raise FileNotFoundError(f'{d} is not a vla_ros checkpoint: {name} is missing')
    meta = json.loads((d / META).read_text())
    cfg = VLAConfig.from_dict(meta['vla_config'])
    e = dict(meta['export'])
    for key in ('state_names', 'action_names', 'precisions', 'optional_cameras'):
        if key in e:
            e[key] = tuple(e[key])
    e['state_norm'], e['action_norm'] = _norm(e['state_norm']), _norm(e['action_norm'])
    spec = ExportSpec(**e)
    model = VLA(cfg)
    missing, unexpected = model.load_state_dict(load_file(str(d / 'model.safetensors')),
                                                strict=False)
    missing = [k for k in missing if not k.endswith(('inv_freq', 'action_pos', 'bin_centers'))]
    if missing or unexpected:
        raise ValueError(f'{d}: weights do not fit the config (missing {missing[:5]}, '
                         f'unexpected {unexpected[:5]})')
    return model.eval(), spec, Tokenizer.from_file(str(d / 'tokenizer.json'))


def random_init(preset: str, seed: int = 0) -> tuple[VLA, ExportSpec, object]:
    """A model of a preset shape (presets.py) with random weights."""
    from vla_ros.export.presets import PRESETS
    from vla_ros.export.tokenizer import word_tokenizer

    if preset not in PRESETS:
        raise ValueError(f'unknown preset {preset!r}; presets: {sorted(PRESETS)}')
    cfg = PRESETS[preset]
    torch.manual_seed(seed)
    model = VLA(cfg).eval()
    names = tuple(f'joint{i}' for i in range(1, 7)) + ('gripper',)
    spec = ExportSpec(name=f'{preset}-random', state_names=names, action_names=names,
                      dt_s=0.05, provenance={'weights': f'random (seed {seed})'})
    return model, spec, word_tokenizer(['pick', 'up', 'the', 'block'], cfg.lm.vocab_size)
