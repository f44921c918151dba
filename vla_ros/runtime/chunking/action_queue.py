"""The time-indexed action queue between the inference worker and the control loop.

The worker adds chunks stamped with their observation time; the control loop asks for the
target at its current time. The queue keeps one merged plan (a Trajectory starting at the
last merge), answers by interpolation, and never executes an action meant for a time that
has already passed (latency compensation). After a stall (the plan ran dry and the arm held
its last target), a chunk resumes at its first action after the last one executed, as
LeRobot's queue does, not at the action meant for the wall-clock time: the actions in between
never ran, so skipping them would be a jump. Times compare with the grid tolerance of
timing.py. Thread-safe under one producer and any number of
consumers: one lock, and every answer is a copy. Pure numpy, no ROS.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from vla_ros.runtime.chunking.chunk import ActionChunk
from vla_ros.runtime.chunking.merge import MergeInput, MergeStrategy, make_strategy
from vla_ros.runtime.chunking.timing import tol_s
from vla_ros.runtime.chunking.trajectory import INTERPOLATIONS, Trajectory

# A chunk stamped further in the future than this is a clock mismatch, not latency.
FUTURE_TOLERANCE_S = 0.05


@dataclass(frozen=True)
class Target:
    position: np.ndarray  # (A,)
    velocity: np.ndarray  # (A,)
    starved: bool  # past the end of the plan (holding its last value) or no plan at all


@dataclass(frozen=True)
class MergeReport:
    latency_s: float  # now - observation stamp
    dropped_steps: int  # actions of the new chunk already in the past
    # max |target(now) after - before| over joints, before = what the control loop was
    # commanding at now (the held last target after a stall); 0 for the first chunk
    jump_position: float
    jump_velocity: float
    stale: bool  # the whole chunk was in the past; the plan was not changed
    resumed_steps: int = 0  # after a stall: actions of the chunk kept that were meant for
    # times the arm spent holding (0 without a stall)


@dataclass(frozen=True)
class PlanView:
    """The merged future, ready for a JointTrajectory: times relative to `start_s`."""

    start_s: float
    time_from_start_s: np.ndarray  # (K,)
    positions: np.ndarray  # (K, A)
    velocities: np.ndarray  # (K, A)


def plan_target(plan: Trajectory | None, t: float) -> Target | None:
    """The setpoint of a merged plan at time t (None without a plan). The queue answers with
    it, and so does a control loop in another process that was sent the plan."""
    if plan is None:
        return None
    pos, vel = plan.sample(t)
    return Target(position=pos[0], velocity=vel[0], starved=t > plan.end)


def plan_view(plan: Trajectory | None, t: float, horizon_s: float | None = None,
              step_s: float | None = None) -> PlanView | None:
    """A merged plan from t on: at its own knots, or resampled every step_s; velocities from
    the interpolant (what a joint_trajectory_controller will follow)."""
    if plan is None or plan.end <= t:
        return None
    end = plan.end if horizon_s is None else min(plan.end, t + horizon_s)
    if step_s is None:
        inner = plan.times[(plan.times > t + 1e-6) & (plan.times <= end + 1e-9)]
        times = np.concatenate([[t], inner])
    else:
        times = np.arange(t, end + 1e-9, step_s)
    pos, vel = plan.sample(times)
    return PlanView(start_s=t, time_from_start_s=times - t, positions=pos, velocities=vel)


class ActionQueue:
    """Merges chunks into one plan and answers "target at time t".

    latency_compensation: place each chunk at its observation time and drop what is already
    past (True), or execute it from its first action on arrival, as naive clients do (False).
    max_live_chunks: temporal ensembling keeps every chunk still covering now (None); a cap
    drops the least weighted first.
    """

    def __init__(self, action_dim: int, strategy: str | MergeStrategy = 'rtc_blend', *,
                 interpolation: str = 'linear', latency_compensation: bool = True,
                 max_live_chunks: int | None = None) -> None:
        if max_live_chunks is not None and max_live_chunks < 1:
            raise ValueError(f'max_live_chunks {max_live_chunks} must be >= 1 or None')
        if action_dim < 1:
            raise ValueError(f'action_dim {action_dim} must be >= 1')
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f'interpolation {interpolation!r} is not one of {INTERPOLATIONS}')
        self.action_dim = action_dim
        self.strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
        self.interpolation = interpolation
        self.latency_compensation = latency_compensation
        self.max_live_chunks = max_live_chunks
        self._lock = threading.Lock()
        # Guarded by _lock:
        self._plan: Trajectory | None = None
        self._live: list[Trajectory] = []
        self._last_query_s = -np.inf
        self._chunks_merged = 0
        self._last_chunk: ActionChunk | None = None

    # --- producer -------------------------------------------------------------------------

    def add_chunk(self, chunk: ActionChunk, now: float) -> MergeReport:
        """Merges a chunk at time `now`. Raises ValueError for a chunk of the wrong width or
        stamped in the future; a chunk entirely in the past leaves the plan as it was."""
        if chunk.actions.shape[1] != self.action_dim:
            raise ValueError(f'chunk has {chunk.actions.shape[1]} action dims, the queue '
                             f'{self.action_dim}')
        if chunk.stamp_s > now + FUTURE_TOLERANCE_S:
            raise ValueError(f'chunk stamped {chunk.stamp_s - now:.3f} s in the future: the '
                             'observation stamps and the control clock disagree')
        with self._lock:
            # Never re-plan before a time the control loop has already executed.
            now = max(now, self._last_query_s)
            latency = now - chunk.stamp_s
            tol = tol_s(chunk.dt_s)
            shift, resumed = self._shift(chunk, now, latency, tol)
            new = chunk.trajectory(self.interpolation, shift_s=shift)
            stamp = chunk.stamp_s + shift
            if new.end < now - tol:
                return MergeReport(latency, chunk.horizon, 0.0, 0.0, stale=True)
            dropped = int(np.sum(new.times < now - tol))
            executing = self._plan
            old = executing if executing is not None and executing.end >= now - tol else None
            live = tuple(tr for tr in self._live if tr.end >= now - tol)
            plan = self.strategy.merge(MergeInput(
                now=now, new=new, new_stamp_s=stamp, dt_s=chunk.dt_s, horizon=chunk.horizon,
                old=old, live=live))
            jump_p = jump_v = 0.0
            if executing is not None:  # measured against what is commanded now, held or not
                p0, v0 = executing.sample(now)
                p1, v1 = plan.sample(now)
                jump_p = float(np.max(np.abs(p1 - p0)))
                jump_v = float(np.max(np.abs(v1 - v0)))
            self._plan = plan
            self._live = self.strategy.history([*live, new], self.max_live_chunks)
            self._chunks_merged += 1
            self._last_chunk = chunk
            return MergeReport(latency, dropped, jump_p, jump_v, stale=False,
                               resumed_steps=resumed)

    def _shift(self, chunk: ActionChunk, now: float, latency: float, tol: float
               ) -> tuple[float, int]:
        """How far the chunk moves later in time, and how many of its actions that brings
        back from the past (a resume after a stall). Called under _lock."""
        if not self.latency_compensation:
            return max(latency, 0.0), 0
        plan = self._plan
        if plan is None or plan.end >= now - tol:
            return 0.0, 0
        # Stalled since plan.end: resume at the first action after the last executed one.
        times = chunk.times
        pending = np.flatnonzero(times > plan.end + tol)
        if len(pending) == 0 or times[pending[0]] >= now - tol:
            return 0.0, 0
        first = pending[0]
        return now - times[first], int(np.sum(times[first:] < now - tol))

    def set_strategy(self, strategy: str | MergeStrategy) -> None:
        """Takes effect at the next merge; the executing plan is kept."""
        new = make_strategy(strategy) if isinstance(strategy, str) else strategy
        with self._lock:
            self.strategy = new
            if not new.keeps_history:
                self._live = []

    def clear(self) -> None:
        """Drops the plan (e.g. on deactivate or e-stop); the next chunk starts afresh."""
        with self._lock:
            self._plan = None
            self._live = []
            self._last_chunk = None

    # --- consumers ------------------------------------------------------------------------

    def target(self, t: float) -> Target | None:
        """The setpoint at control time t, or None when nothing was ever planned (or after
        clear()). Control time must not go backwards: that is a clock fault (ValueError)."""
        with self._lock:
            if t < self._last_query_s - 1e-9:
                raise ValueError(f'control time went backwards by {self._last_query_s - t:.6f} s')
            self._last_query_s = max(self._last_query_s, t)
            plan = self._plan
        return plan_target(plan, t)

    def remaining_s(self, t: float) -> float:
        """Planned time left after t (0 when starved or empty)."""
        with self._lock:
            plan = self._plan
        return 0.0 if plan is None else max(plan.end - t, 0.0)

    def plan(self) -> Trajectory | None:
        with self._lock:
            return self._plan  # immutable

    def plan_view(self, t: float, horizon_s: float | None = None,
                  step_s: float | None = None) -> PlanView | None:
        """The plan from t on: at its own knots, or resampled every step_s; velocities from the
        interpolant (what a joint_trajectory_controller will follow)."""
        with self._lock:
            plan = self._plan
        return plan_view(plan, t, horizon_s, step_s)

    def guidance_prefix(self, stamp_s: float, dt_s: float, horizon: int
                        ) -> tuple[np.ndarray, np.ndarray] | None:
        """For inference-time RTC: the executing plan sampled at a future chunk's times, and a
        mask of the steps it covers. None when nothing is executing."""
        with self._lock:
            plan = self._plan
        if plan is None:
            return None
        times = stamp_s + dt_s * np.arange(horizon)
        covered = times <= plan.end + tol_s(dt_s)
        return plan.sample(times)[0], covered

    @property
    def chunks_merged(self) -> int:
        with self._lock:
            return self._chunks_merged

    @property
    def last_chunk(self) -> ActionChunk | None:
        with self._lock:
            return self._last_chunk
