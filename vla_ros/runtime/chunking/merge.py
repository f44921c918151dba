"""How a new action chunk is merged with the one executing. Each strategy follows its source
(reference/robots_and_chunking.md, Part B):

- replace: the new chunk takes over at once (LeRobot `latest_only`, openpi's broker).
- weighted average: over the overlap, w_old * old + (1 - w_old) * new (LeRobot
  `aggregate_fn`: weighted_average 0.3/0.7, average 0.5/0.5, conservative 0.7/0.3).
- temporal ensemble: every live chunk predicts each future time; weights exp(-k * i) with
  i = 0 for the oldest chunk, so the oldest gets the most weight, k = 0.01 (ACT).
- rtc_blend: RTC's soft prefix mask used as a blend weight on the old chunk: 1 for the first d
  steps (covered by the inference delay), decaying over [d, H - s), 0 from H - s on (Black et
  al. 2025, `get_prefix_weights`; schedules exp, linear, ones, zeros).
- rtc_inpaint: the executing prefix was passed to the policy, whose flow sampler blended it
  into the sample before every Euler step (replacement inpainting, not RTC's guidance: no
  Jacobian, no guidance weight); the chunk then replaces the plan.
- rtc_guided: real-time chunking as in Black et al. 2025, Algorithm 1: the policy's flow
  sampler is guided toward the executing prefix with the vector-Jacobian product of the
  denoiser (soft mask over the execution horizon, guidance weight clipped at beta); needs a
  flow_dit package exported with the VJP graph. The chunk then replaces the plan, which
  starts it at index d, as the paper switches chunks.

Times are compared with the one grid tolerance of timing.py.

All strategies produce a Trajectory that starts at `now`; nothing before `now` is kept.
Pure numpy, no ROS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vla_ros.runtime.chunking.timing import dedupe_times, step_index, steps_before, tol_s
from vla_ros.runtime.chunking.trajectory import Trajectory

WEIGHTED_PRESETS = {'weighted_average': 0.3, 'average': 0.5, 'conservative': 0.7}
RTC_SCHEDULES = ('exp', 'linear', 'ones', 'zeros')
GUIDED = {'rtc_inpaint': 'inpaint', 'rtc_guided': 'guided'}  # strategy -> policy guidance
STRATEGIES = ('replace', *WEIGHTED_PRESETS, 'temporal_ensemble', 'rtc_blend', *GUIDED)


def rtc_prefix_weights(index: np.ndarray, delay_steps: float, horizon: int,
                       execution_horizon: int, schedule: str = 'exp') -> np.ndarray:
    """RTC's soft mask W over (possibly fractional) chunk indices: the weight of the old
    chunk. d = delay_steps, s = execution_horizon, H = horizon."""
    if schedule not in RTC_SCHEDULES:
        raise ValueError(f'RTC schedule {schedule!r} is not one of {RTC_SCHEDULES}')
    i = np.asarray(index, dtype=np.float64)
    d, s, h = float(delay_steps), float(execution_horizon), float(horizon)
    if schedule == 'ones':
        return np.where(i < h - s, 1.0, 0.0)
    if schedule == 'zeros':
        return np.where(i < d, 1.0, 0.0)
    c = np.clip((h - s - i) / max(h - s - d + 1.0, 1e-9), 0.0, 1.0)
    w = c * np.expm1(c) / (math.e - 1.0) if schedule == 'exp' else c
    return np.where(i < d, 1.0, np.where(i >= h - s, 0.0, w))


@dataclass(frozen=True)
class MergeInput:
    now: float
    new: Trajectory  # the new chunk, already placed in time (shifted if not compensated)
    new_stamp_s: float  # time of the new chunk's action 0 (after any shift)
    dt_s: float
    horizon: int
    old: Trajectory | None  # the plan executing until now (None: nothing executing)
    live: tuple[Trajectory, ...]  # earlier chunks still covering now, oldest first


def _union_knots(now: float, trajectories: tuple[Trajectory, ...], min_gap_s: float,
                 tol: float) -> np.ndarray:
    # Knots of chunks on the same grid may differ in the last bit: one knot, not a sliver.
    times = dedupe_times(np.concatenate([tr.times for tr in trajectories]), tol)
    return np.concatenate([[now], times[times > now + min_gap_s]])


def _future(m: MergeInput) -> Trajectory:
    """The new chunk from now on; knots within half a step after now are dropped (the first
    segment then spans at least dt/2)."""
    return m.new.after(m.now, min_gap_s=0.5 * m.dt_s)


class MergeStrategy:
    name = 'replace'
    keeps_history = False  # temporal ensembling needs the earlier chunks
    guidance: str | None = None  # what the policy is asked to do with the executing prefix

    def merge(self, m: MergeInput) -> Trajectory:
        return _future(m)

    def history(self, chunks: list[Trajectory], cap: int | None) -> list[Trajectory]:
        """The chunks to keep for the next merge (oldest first)."""
        return []

    def describe(self) -> str:
        return self.name


class Replace(MergeStrategy):
    name = 'replace'


class RTCInpaint(MergeStrategy):
    """The policy inpainted the executing prefix by replacement; the chunk replaces the
    plan."""

    name = 'rtc_inpaint'
    guidance = 'inpaint'


class RTCGuided(MergeStrategy):
    """The policy ran RTC's guided denoising toward the executing prefix; the chunk
    replaces the plan."""

    name = 'rtc_guided'
    guidance = 'guided'


class WeightedAverage(MergeStrategy):
    def __init__(self, name: str = 'weighted_average', old_weight: float | None = None) -> None:
        if old_weight is None:
            if name not in WEIGHTED_PRESETS:
                raise ValueError(f'weighted preset {name!r} is not one of '
                                 f'{list(WEIGHTED_PRESETS)}')
            old_weight = WEIGHTED_PRESETS[name]
        if not 0.0 <= old_weight <= 1.0:
            raise ValueError(f'old_weight {old_weight} is outside [0, 1]')
        self.name = name
        self.old_weight = old_weight

    def merge(self, m: MergeInput) -> Trajectory:
        new = _future(m)
        if m.old is None:
            return new
        times = new.times
        pos = new.positions.copy()
        overlap = times <= m.old.end + tol_s(m.dt_s)
        if np.any(overlap):
            old_pos = m.old.sample(times[overlap])[0]
            pos[overlap] = self.old_weight * old_pos + (1.0 - self.old_weight) * pos[overlap]
        return Trajectory(times, pos, new.interpolation)

    def describe(self) -> str:
        return f'{self.name} (old {self.old_weight:g} / new {1 - self.old_weight:g})'


class TemporalEnsemble(MergeStrategy):
    name = 'temporal_ensemble'
    keeps_history = True

    def __init__(self, k: float = 0.01) -> None:
        # k < 0 weights the newest most; ACT (and LeRobot) allow it.
        if not math.isfinite(k):
            raise ValueError(f'temporal ensemble k {k} must be finite')
        self.k = k

    def history(self, chunks: list[Trajectory], cap: int | None) -> list[Trajectory]:
        """All live chunks; with a cap, the least weighted go first: for k > 0 the newest
        before the last one (which alone covers the far end of the plan), else the oldest."""
        kept = list(chunks)
        while cap is not None and len(kept) > max(cap, 1):
            kept.pop(-2 if self.k > 0 else 0)
        return kept

    def merge(self, m: MergeInput) -> Trajectory:
        chunks = (*m.live, m.new)
        tol = tol_s(m.dt_s)
        times = _union_knots(m.now, chunks, 0.5 * m.dt_s, tol)
        num = np.zeros((len(times), m.new.dim))
        den = np.zeros((len(times), 1))
        for i, tr in enumerate(chunks):  # i = 0 is the oldest
            covers = (times >= tr.start - tol) & (times <= tr.end + tol)
            if not np.any(covers):
                continue
            w = math.exp(-self.k * i)
            num[covers] += w * tr.sample(times[covers])[0]
            den[covers] += w
        # Every knot at or after the new chunk's start is covered by the new chunk; a knot
        # before it (possible only without latency compensation) falls back to the new chunk.
        uncovered = den[:, 0] == 0
        if np.any(uncovered):
            num[uncovered] = m.new.sample(times[uncovered])[0]
            den[uncovered] = 1.0
        return Trajectory(times, num / den, m.new.interpolation)

    def describe(self) -> str:
        return f'{self.name} (k={self.k:g})'


class RTCBlend(MergeStrategy):
    name = 'rtc_blend'

    def __init__(self, schedule: str = 'exp', execution_horizon: int | None = None) -> None:
        if schedule not in RTC_SCHEDULES:
            raise ValueError(f'RTC schedule {schedule!r} is not one of {RTC_SCHEDULES}')
        if execution_horizon is not None and execution_horizon < 1:
            raise ValueError(f'execution_horizon {execution_horizon} must be >= 1')
        self.schedule = schedule
        self.execution_horizon = execution_horizon

    def weights(self, index: np.ndarray, delay_steps: float, horizon: int) -> np.ndarray:
        s = self.execution_horizon or horizon // 2
        # RTC requires d <= s <= H - d; a delay beyond that leaves no soft region.
        s = int(min(max(s, math.ceil(delay_steps)), max(horizon - math.ceil(delay_steps), 1)))
        return rtc_prefix_weights(index, delay_steps, horizon, s, self.schedule)

    def merge(self, m: MergeInput) -> Trajectory:
        new = _future(m)
        if m.old is None:
            return new
        # The delay is known exactly at merge time: the steps of the new chunk that started
        # before now (now itself lies inside the frozen prefix, so the plan stays continuous).
        delay_steps = steps_before(max(m.now - m.new_stamp_s, 0.0), m.dt_s) + 1
        index = step_index(new.times, m.new_stamp_s, m.dt_s)
        w = self.weights(index, delay_steps, m.horizon)
        w[new.times > m.old.end + tol_s(m.dt_s)] = 0.0  # no old plan there
        old_pos = m.old.sample(new.times)[0]
        pos = w[:, None] * old_pos + (1.0 - w[:, None]) * new.positions
        return Trajectory(new.times, pos, new.interpolation)

    def describe(self) -> str:
        s = self.execution_horizon or 'H/2'
        return f'{self.name} ({self.schedule}, s={s})'


def make_strategy(name: str, **kwargs) -> MergeStrategy:
    """Builds a strategy by name (see STRATEGIES); kwargs go to its constructor."""
    if name == 'replace':
        return Replace()
    if name == 'rtc_inpaint':
        return RTCInpaint()
    if name == 'rtc_guided':
        return RTCGuided()
    if name in WEIGHTED_PRESETS:
        return WeightedAverage(name, **kwargs)
    if name == 'temporal_ensemble':
        return TemporalEnsemble(**kwargs)
    if name == 'rtc_blend':
        return RTCBlend(**kwargs)
    raise ValueError(f'merge strategy {name!r} is not one of {list(STRATEGIES)}')
