"""Time-indexed joint trajectories: knots (times, positions) with linear or cubic
interpolation, and their velocities. Pure numpy; used by the action queue and its bench.

Cubic interpolation is a C1 Catmull-Rom Hermite spline on non-uniform knots: it passes through
every knot (the model's actions are kept exactly), and its velocity is continuous, which a
joint_trajectory_controller and a position-streaming controller both prefer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INTERPOLATIONS = ('linear', 'cubic')


@dataclass(frozen=True)
class Trajectory:
    times: np.ndarray  # (K,) strictly increasing, seconds
    positions: np.ndarray  # (K, A)
    interpolation: str = 'linear'

    def __post_init__(self) -> None:
        # Own copies: a trajectory is shared between threads and must never change.
        t = np.array(self.times, dtype=np.float64)
        p = np.array(self.positions, dtype=np.float64)
        object.__setattr__(self, 'times', t)
        object.__setattr__(self, 'positions', p)
        if t.ndim != 1 or p.ndim != 2 or len(t) != len(p) or len(t) == 0:
            raise ValueError(f'trajectory needs times (K,) and positions (K, A), got '
                             f'{t.shape} and {p.shape}')
        if len(t) > 1 and not np.all(np.diff(t) > 0):
            raise ValueError('trajectory times must be strictly increasing')
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
            raise ValueError('trajectory holds non-finite times or positions')
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f'interpolation {self.interpolation!r} is not one of '
                             f'{INTERPOLATIONS}')
        t.setflags(write=False)
        p.setflags(write=False)

    @property
    def start(self) -> float:
        return float(self.times[0])

    @property
    def end(self) -> float:
        return float(self.times[-1])

    @property
    def dim(self) -> int:
        return self.positions.shape[1]

    def _tangents(self) -> np.ndarray:
        t, p = self.times, self.positions
        m = np.zeros_like(p)
        if len(t) < 2:
            return m
        m[0] = (p[1] - p[0]) / (t[1] - t[0])
        m[-1] = (p[-1] - p[-2]) / (t[-1] - t[-2])
        if len(t) > 2:
            m[1:-1] = (p[2:] - p[:-2]) / (t[2:] - t[:-2])[:, None]
        return m

    def sample(self, query: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Positions and velocities at the query times (Q,) -> (Q, A), (Q, A). Outside
        [start, end] the trajectory holds its end values with zero velocity."""
        q = np.atleast_1d(np.asarray(query, dtype=np.float64))
        t, p = self.times, self.positions
        if len(t) == 1:
            return np.repeat(p, len(q), axis=0), np.zeros((len(q), self.dim))
        qc = np.clip(q, t[0], t[-1])
        k = np.clip(np.searchsorted(t, qc, side='right') - 1, 0, len(t) - 2)
        h = (t[k + 1] - t[k])[:, None]
        s = ((qc - t[k]) / h[:, 0])[:, None]
        p0, p1 = p[k], p[k + 1]
        if self.interpolation == 'linear':
            pos = p0 + s * (p1 - p0)
            vel = (p1 - p0) / h
        else:
            m = self._tangents()
            m0, m1 = m[k] * h, m[k + 1] * h
            s2, s3 = s * s, s * s * s
            pos = ((2 * s3 - 3 * s2 + 1) * p0 + (s3 - 2 * s2 + s) * m0
                   + (-2 * s3 + 3 * s2) * p1 + (s3 - s2) * m1)
            vel = ((6 * s2 - 6 * s) * p0 + (3 * s2 - 4 * s + 1) * m0
                   + (-6 * s2 + 6 * s) * p1 + (3 * s2 - 2 * s) * m1) / h
        outside = (q < t[0]) | (q > t[-1])
        vel[outside] = 0.0
        return pos, vel

    def at(self, time: float) -> np.ndarray:
        return self.sample(time)[0][0]

    def after(self, time: float, min_gap_s: float = 1e-6) -> Trajectory:
        """The part from `time` on, starting with a knot at `time` (its value here). Knots
        closer than `min_gap_s` after `time` are dropped, so a merge never creates a sliver
        segment whose slope would be a velocity spike."""
        value = self.at(time)
        keep = self.times > time + min_gap_s
        times = np.concatenate([[time], self.times[keep]])
        positions = np.concatenate([value[None], self.positions[keep]])
        return Trajectory(times, positions, self.interpolation)
