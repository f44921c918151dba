"""ActionChunk: what a policy returns and the action queue consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vla_ros.runtime.chunking.trajectory import Trajectory


@dataclass(frozen=True)
class ActionChunk:
    """H actions for one observation, as absolute targets in the robot's action space.

    Action k is the setpoint for time `stamp_s + k * dt_s` (k = 0 is the observation instant,
    as in LeRobot's async timestamps), on the same clock the control loop reads.
    """

    stamp_s: float  # observation time
    dt_s: float
    actions: np.ndarray  # (H, A)
    exit_layer: int | None = None  # backbone layer the action came from
    timings_ms: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        a = np.array(self.actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
            raise ValueError(f'chunk actions must be (H, A) with H, A >= 1, got {a.shape}')
        if not np.all(np.isfinite(a)):
            raise ValueError('chunk holds non-finite actions (NaN/inf); it is rejected')
        if not (np.isfinite(self.stamp_s) and np.isfinite(self.dt_s) and self.dt_s > 0):
            raise ValueError(f'chunk stamp {self.stamp_s} and dt {self.dt_s} must be finite, '
                             'dt > 0')
        a.setflags(write=False)
        object.__setattr__(self, 'actions', a)

    @property
    def horizon(self) -> int:
        return self.actions.shape[0]

    @property
    def times(self) -> np.ndarray:
        return self.stamp_s + self.dt_s * np.arange(self.horizon)

    @property
    def end_s(self) -> float:
        return self.stamp_s + self.dt_s * (self.horizon - 1)

    def trajectory(self, interpolation: str = 'linear', shift_s: float = 0.0) -> Trajectory:
        return Trajectory(self.times + shift_s, self.actions, interpolation)
