"""Time on a chunk's grid: the one tolerance every time comparison in chunking/ uses.

A chunk's action k is meant for stamp + k dt, and the merge instant `now` is a float too, so
"is this knot at or before the old plan's end" or "how many steps of the new chunk lie before
now" must not depend on the last bit of a sum: with dt = 0.05 or 1/30, stamp + k dt and
end - j dt differ from the real value by ~1e-17 s, which flipped exact comparisons in a few
percent of merges (a shared last knot left unblended, RTC's first soft step frozen, a chunk
that ends at now left out of the ensemble). Here times within GRID_TOL_STEPS of a step count
as equal, in both directions, everywhere. Pure standard library and numpy.
"""

from __future__ import annotations

import math

import numpy as np

# A millionth of a step: far above float rounding (1e-12 steps at hours of uptime), far
# below any real timing difference (a 1 kHz control tick is 1/20 of a 20 Hz step).
GRID_TOL_STEPS = 1e-6


def tol_s(dt_s: float) -> float:
    """The tolerance in seconds on a grid of step dt_s."""
    return GRID_TOL_STEPS * dt_s


def step_index(times: np.ndarray | float, stamp_s: float, dt_s: float) -> np.ndarray:
    """(t - stamp) / dt, snapped to the integer when within the tolerance (knots of a chunk
    come out as exact integers)."""
    x = (np.asarray(times, dtype=np.float64) - stamp_s) / dt_s
    r = np.round(x)
    return np.where(np.abs(x - r) <= GRID_TOL_STEPS, r, x)


def steps_before(duration_s: float, dt_s: float) -> int:
    """floor(duration / dt) with the tolerance: how many whole steps fit in duration."""
    return math.floor(duration_s / dt_s + GRID_TOL_STEPS)


def dedupe_times(times: np.ndarray, tol: float) -> np.ndarray:
    """Sorted times with any time within `tol` of the previous kept one removed."""
    t = np.sort(np.asarray(times, dtype=np.float64))
    if len(t) == 0:
        return t
    keep = [t[0]]
    for x in t[1:]:
        if x - keep[-1] > tol:
            keep.append(x)
    return np.array(keep)
