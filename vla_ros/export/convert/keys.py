"""Reading published weight files and mapping their keys strictly onto our state dict.

Weights come from safetensors (one file or an HF shard index) or from `.pt` state dicts loaded
with `torch.load(weights_only=True)` (no code runs). `KeyMap` records where every upstream
tensor goes; `KeyMap.finish` checks that every upstream tensor was used or explicitly dropped,
that every tensor of our model is filled, and that each shape fits, naming the key and both
shapes otherwise.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from vla_ros.export.convert import ConvertError


def _bar(items: list, desc: str, progress: bool):
    if not progress:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, unit='tensor', file=sys.stderr, leave=False)


def load_safetensors(path: Path, progress: bool = True, prefix: str = '') -> dict:
    """One `.safetensors` file or an HF `*.safetensors.index.json` (all its shards)."""
    from safetensors import safe_open

    if path.name.endswith('.index.json'):
        index = json.loads(path.read_text())
        shards = sorted(set(index.get('weight_map', {}).values()))
        if not shards:
            raise ConvertError(f'{path}: no weight_map in the shard index')
        files = [path.parent / s for s in shards]
    else:
        files = [path]
    out: dict[str, torch.Tensor] = {}
    for f in files:
        if not f.is_file():
            raise ConvertError(f'{f} is missing (named by {path.name})')
        with safe_open(str(f), framework='pt') as h:
            for k in _bar(list(h.keys()), f.name, progress):
                out[prefix + k] = h.get_tensor(k)
    return out


def safetensors_in(src: Path, progress: bool = True) -> dict | None:
    """The weights of `src`'s shard index, or of its one `.safetensors` file; None when it
    has neither (the caller looks for its family's `.pt` layouts)."""
    index = sorted(src.glob('*.safetensors.index.json'))
    if index:
        return load_safetensors(index[0], progress)
    files = sorted(src.glob('*.safetensors'))
    if len(files) == 1:
        return load_safetensors(files[0], progress)
    return None


def load_pt_state_dict(path: Path, prefix: str = '', strip: Iterable[str] = ('module.',)
                       ) -> dict:
    """A `.pt` state dict (weights only; a pickle with code in it is refused by torch)."""
    try:
        obj = torch.load(str(path), map_location='cpu', weights_only=True)
    except Exception as e:  # torch raises UnpicklingError / RuntimeError variants
        raise ConvertError(f'{path}: not a weights-only state dict ({e})') from e
    if not isinstance(obj, dict):
        raise ConvertError(f'{path}: holds {type(obj).__name__}, not a state dict')
    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise ConvertError(f'{path}: entry {k!r} is {type(v).__name__}, not a tensor')
        for s in strip:
            if k.startswith(s):
                k = k[len(s):]
        out[prefix + k] = v
    return out


class Tensors(dict):
    """Upstream tensors by key; a missing key is a ConvertError naming it (converters read
    shapes from the tensors before mapping them)."""

    def __missing__(self, key: str):
        raise ConvertError(f'upstream tensor {key!r} is missing from the checkpoint')


def find_one(src: Path, patterns: Iterable[str], what: str) -> Path:
    """The single file in `src` matching one of `patterns` (glob), else a clear error."""
    hits = sorted({p for pat in patterns for p in src.glob(pat)})
    if len(hits) != 1:
        names = ', '.join(p.name for p in hits) or 'none'
        raise ConvertError(f'{src}: expected one {what} ({" or ".join(patterns)}), found {names}')
    return hits[0]


class KeyMap:
    """Builds our state dict from upstream tensors, recording every use."""

    def __init__(self, upstream: dict[str, torch.Tensor], dropped: Iterable[str] = ()) -> None:
        self.upstream = upstream
        self.dropped = tuple(dropped)  # fnmatch patterns of upstream keys we do not use
        self.used: set[str] = set()
        self.state: dict[str, torch.Tensor] = {}
        self.source: dict[str, str] = {}  # ours -> upstream key, for shape errors

    def is_dropped(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, p) for p in self.dropped)

    def get(self, key: str) -> torch.Tensor:
        if key not in self.upstream:
            raise ConvertError(f'upstream tensor {key!r} is missing from the checkpoint')
        self.used.add(key)
        return self.upstream[key]

    def put(self, ours: str, tensor: torch.Tensor) -> None:
        if ours in self.state:
            raise ConvertError(f'{ours!r} is filled twice (converter bug)')
        self.state[ours] = tensor

    def take(self, upstream_key: str, ours: str,
             transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        t = self.get(upstream_key)
        self.put(ours, transform(t) if transform else t)
        self.source[ours] = upstream_key

    def take_prefix(self, upstream_prefix: str, our_prefix: str) -> int:
        """Every upstream key under `upstream_prefix` renamed to `our_prefix` (not yet used and
        not on the dropped list)."""
        keys = [k for k in self.upstream if k.startswith(upstream_prefix) and k not in self.used
                and not self.is_dropped(k)]
        for k in keys:
            self.take(k, our_prefix + k[len(upstream_prefix):])
        return len(keys)

    def finish(self, expected: dict[str, torch.Tensor],
               ignore_missing: Iterable[str] = ()) -> dict[str, torch.Tensor]:
        """Checks the mapping against our model's state dict (`expected`: name -> tensor of
        the right shape); returns the state dict to load, cast to the expected dtypes."""
        left = [k for k in self.upstream if k not in self.used and not self.is_dropped(k)]
        if left:
            raise ConvertError(f'{len(left)} upstream tensors are neither mapped nor on the '
                               f'dropped list, e.g. {left[:5]}')
        unexpected = [k for k in self.state if k not in expected]
        if unexpected:
            raise ConvertError(f'converter produced keys our model does not have: '
                               f'{unexpected[:5]}')
        missing = [k for k in expected if k not in self.state
                   and not any(fnmatch.fnmatchcase(k, p) for p in ignore_missing)]
        if missing:
            raise ConvertError(f'{len(missing)} tensors of our model have no upstream source, '
                               f'e.g. {missing[:5]}')
        out = {}
        for k, t in self.state.items():
            want = expected[k]
            if tuple(t.shape) != tuple(want.shape):
                src = f' (upstream {self.source[k]!r})' if k in self.source else ''
                raise ConvertError(f'{k}: upstream gives shape {tuple(t.shape)}, our model '
                                   f'needs {tuple(want.shape)}{src}')
            out[k] = t.to(want.dtype).contiguous()
        return out
