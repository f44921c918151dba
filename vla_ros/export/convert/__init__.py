"""Converters from the published checkpoint layouts of the seed models (Evo-1, A1,
VLA-Adapter, EdgeVLA) to our checkpoint directory (export/checkpoint.py), ready for
`vla-ros export`.

One module per family, each exposing
  detect(src: Path) -> bool                      the files say this family
  convert(src: Path, out: Path, progress: bool)  write our checkpoint into `out` (empty)
The mapping of every upstream tensor is strict (keys.py): mapped, or on the family's explicit
allow-list of dropped keys; anything else is an error and nothing is written (the converter
writes into a temporary directory that is renamed into place only when complete).
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import tempfile
from pathlib import Path
from types import ModuleType

FAMILIES = ('evo1', 'a1', 'vla_adapter', 'edgevla')


class ConvertError(ValueError):
    """A checkpoint that cannot be converted; the message names the file or key and what to do."""


def family_module(family: str) -> ModuleType:
    if family not in FAMILIES:
        raise ConvertError(f'unknown family {family!r}; families: {", ".join(FAMILIES)}')
    try:
        return importlib.import_module(f'{__name__}.{family}')
    except ModuleNotFoundError as e:
        if e.name != f'{__name__}.{family}':
            raise
        raise ConvertError(f'this version of vla_ros has no converter for {family}') from e


def available() -> tuple[str, ...]:
    """The families this version converts."""
    return tuple(f for f in FAMILIES
                 if importlib.util.find_spec(f'{__name__}.{f}') is not None)


def detect_family(src: str | Path) -> str:
    """The one family whose files `src` holds; ConvertError when none or several match."""
    src = Path(src)
    if not src.is_dir():
        raise ConvertError(f'{src} is not a directory')
    found = [f for f in available() if family_module(f).detect(src)]
    if len(found) != 1:
        listing = ', '.join(sorted(p.name for p in src.iterdir())[:20])
        what = 'no family' if not found else f'several families ({", ".join(found)})'
        raise ConvertError(f'{src}: the files match {what}; pass --family '
                           f'({"|".join(FAMILIES)}). Files: {listing}')
    return found[0]


def convert_checkpoint(src: str | Path, out: str | Path, family: str | None = None,
                       progress: bool = True) -> Path:
    """Converts `src` (published layout) into our checkpoint directory `out`. `out` must not
    exist yet or be empty; on any error nothing is left at `out`."""
    src, out = Path(src), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConvertError(f'{out} exists and is not an empty directory')
    family = family or detect_family(src)
    mod = family_module(family)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', dir=out.parent))
    try:
        mod.convert(src, tmp, progress=progress)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
