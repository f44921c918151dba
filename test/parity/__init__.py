"""Per-family parity drivers for test_parity.py. Each module `<family>.py` exposes

  arrange(case: Path, dst: Path) -> Path
      lay the case's files out as a published checkpoint of the family (the files and key
      names a released checkpoint has) under `dst`; returns the directory to convert
  compare(case: Path, checkpoint: Path, package: Path, backend: str) -> list[Check]
      run our runtime (`backend`: 'ort' = ONNX Runtime on the exported package, 'torch' = the
      torch reference on the converted checkpoint) from the case's raw inputs and compare
      outputs and intermediates with the upstream arrays
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Check:
    name: str  # the array compared (upstream name in case.npz)
    max_abs_err: float
    tol: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs_err)) and self.max_abs_err <= self.tol


def check(name: str, ours, upstream, tol: float, relative: bool = False) -> Check:
    """Max abs error against `tol`; with `relative`, tol scales with max(1, max|upstream|)
    (deep fp32 stacks whose states grow past 1 accumulate rounding in proportion)."""
    ours, upstream = np.asarray(ours, np.float64), np.asarray(upstream, np.float64)
    if ours.shape != upstream.shape:
        raise AssertionError(f'{name}: our shape {ours.shape} != upstream {upstream.shape}')
    if relative and upstream.size:
        tol = tol * max(1.0, float(np.max(np.abs(upstream))))
    return Check(name, float(np.max(np.abs(ours - upstream))) if ours.size else 0.0, tol)
