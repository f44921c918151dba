"""The gripper's safety layer: what the model's gripper value becomes as a gripper command.

A gripper is commanded open or closed, never in between and never at the chunk rate:
- binarization with hysteresis: the fraction closed (0 = open, 1 = closed) must reach
  `close_threshold` to close and fall to `open_threshold` to open; in between the command
  stays as it is (and before the first crossing nothing is commanded);
- a minimum dwell: after any change no other change for `min_dwell_s`, so a model hesitating
  around a threshold cannot make the fingers chatter;
- on a fault (whenever the arm's safety filter holds, and when the node leaves active) the
  configured behaviour, at once: `hold` keeps the current command, `open` / `close` command
  that (dwell or not: a fault never waits); tracking resumes after the dwell;
- positions inside the gripper's joint range, and max_effort capped by the gripper's own.
Pure logic on plain floats and monotonic seconds; no ROS, no numpy. The control thread owns
each filter (not thread-safe).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vla_ros.adapters.robots import Gripper

FAULT_BEHAVIORS = ('hold', 'open', 'close')


@dataclass(frozen=True)
class GripperFilterConfig:
    open_threshold: float = 0.3  # fraction closed at or below which the gripper opens
    close_threshold: float = 0.7  # fraction closed at or above which it closes
    min_dwell_s: float = 0.5  # a real gripper needs about this long for a full stroke
    fault_behavior: str = 'hold'  # hold: an object in the fingers is not dropped
    max_effort: float = 20.0  # N, for goals that carry an effort (grasp force)

    def __post_init__(self) -> None:
        if not 0.0 <= self.open_threshold < self.close_threshold <= 1.0:
            raise ValueError(
                f'gripper thresholds: need 0 <= open_threshold < close_threshold <= 1, got '
                f'open_threshold {self.open_threshold}, close_threshold '
                f'{self.close_threshold}')
        if not (math.isfinite(self.min_dwell_s) and self.min_dwell_s >= 0.0):
            raise ValueError(f'gripper min_dwell_s {self.min_dwell_s} must be >= 0')
        if self.fault_behavior not in FAULT_BEHAVIORS:
            raise ValueError(f'gripper fault_behavior {self.fault_behavior!r} is not one of '
                             f'{FAULT_BEHAVIORS}')
        if not (math.isfinite(self.max_effort) and self.max_effort >= 0.0):
            raise ValueError(f'gripper max_effort {self.max_effort} must be finite and >= 0')


@dataclass(frozen=True)
class GripperGoal:
    """One command for a gripper: the joint position to go to and the effort allowed."""

    closed: bool
    position: float  # joint units, inside the gripper's range
    max_effort: float  # N; at most the gripper's own max_effort
    reason: str  # 'tracking', or 'fault: <why>'


class GripperFilter:
    """Model value -> gripper goals, for one gripper. `track` and `fault` return the new goal
    when the command changes, else None: the caller sends only changes."""

    def __init__(self, gripper: Gripper, config: GripperFilterConfig) -> None:
        self.gripper = gripper
        self.config = config  # replaced whole (frozen) when a parameter changes
        self.goal: GripperGoal | None = None  # the current command; None before the first
        self._changed_at: float | None = None

    @property
    def closed(self) -> bool | None:
        return None if self.goal is None else self.goal.closed

    def track(self, now_s: float, closure: float) -> GripperGoal | None:
        """The arm is tracking: `closure` is the model's fraction closed (NaN is ignored)."""
        c = self.config
        if not math.isfinite(closure):
            return None
        want = self.closed
        if closure >= c.close_threshold:
            want = True
        elif closure <= c.open_threshold:
            want = False
        if want is None or want == self.closed:
            return None
        if self._changed_at is not None and now_s - self._changed_at < c.min_dwell_s:
            return None  # decided again on the first tick after the dwell
        return self._change(now_s, want, 'tracking')

    def fault(self, now_s: float, reason: str) -> GripperGoal | None:
        """The arm holds (or the node stops): the configured fault behaviour, at once."""
        behavior = self.config.fault_behavior
        if behavior == 'hold':
            return None
        want = behavior == 'close'
        if want == self.closed:
            return None
        return self._change(now_s, want, f'fault: {reason}')

    def position(self, closed: bool) -> float:
        g = self.gripper
        lo, hi = g.joint_range
        return min(max(g.joint_closed if closed else g.joint_open, lo), hi)

    def _change(self, now_s: float, closed: bool, reason: str) -> GripperGoal:
        effort = min(self.config.max_effort, self.gripper.max_effort)
        self.goal = GripperGoal(closed, self.position(closed), effort, reason)
        self._changed_at = now_s
        return self.goal
