"""When to run the next inference, and how long inference takes.

The delay estimate is over a window of recent latencies, with the first samples (cold start:
allocator warm-up, engine build, first-call compilation) left out. Two rules:
  max         the largest of the last `window` delays, RTC's rule (Black et al. 2025,
              Algorithm 1: d = max over the last b observed delays). The default, b = 100:
              for independent latencies a new one exceeds the largest of the last b with
              probability 1 / (b + 1), under 1 % whatever the distribution (its tail too).
  percentile  the `percentile`-th of the window: over-estimates less, under-estimates more
              (p90 of 50: ~5 % of chunks on the queue bench).
Both forget: an all-time running maximum (LeRobot's LatencyTracker.max()) keeps one early
outlier forever, and a mean lets slow calls through; both were root causes of chunk-boundary
jumps reported against LeRobot (reference/anchors.md §5.2).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from vla_ros.runtime.chunking.timing import GRID_TOL_STEPS

REQUEST_MODES = ('horizon_fraction', 'horizon_s', 'period_s')
DELAY_RULES = ('max', 'percentile')


class LatencyEstimator:
    def __init__(self, window: int = 100, rule: str = 'max', percentile: float = 90.0,
                 warmup: int = 2, initial_s: float = 0.1) -> None:
        if rule not in DELAY_RULES:
            raise ValueError(f'delay rule {rule!r} is not one of {DELAY_RULES}')
        if window < 1 or not 0 < percentile <= 100 or warmup < 0 or initial_s < 0:
            raise ValueError(f'bad latency estimator settings: window={window}, '
                             f'percentile={percentile}, warmup={warmup}, initial={initial_s}')
        self.rule = rule
        self.percentile = percentile
        self.initial_s = initial_s
        self._warmup_left = warmup
        self._samples: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def add(self, latency_s: float) -> None:
        if not math.isfinite(latency_s) or latency_s < 0:
            raise ValueError(f'latency {latency_s} must be finite and >= 0')
        with self._lock:
            if self._warmup_left > 0:
                self._warmup_left -= 1
                return
            self._samples.append(latency_s)

    def estimate_s(self) -> float:
        with self._lock:
            if not self._samples:
                return self.initial_s
            if self.rule == 'max':
                return max(self._samples)
            return float(np.percentile(np.fromiter(self._samples, float), self.percentile))

    def delay_steps(self, dt_s: float) -> int:
        return math.ceil(self.estimate_s() / dt_s - GRID_TOL_STEPS)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._samples)


@dataclass(frozen=True)
class RequestPolicy:
    """horizon_fraction: request when the plan left after the expected delay is at most
    `value` x the chunk's span; horizon_s: the same in seconds; period_s: every `value`
    seconds.

    Against LeRobot: its async client requests when queue_size / chunk_size <= 0.5
    (`chunk_size_threshold`) at request time, so the new chunk arrives with less left. This
    rule applies the same fraction to what is expected to be left when the chunk arrives
    (remaining - expected delay), so it requests earlier by the delay: for H = 20 at 20 Hz
    and 150 ms, at 13 queued actions where LeRobot's client requests at 10. Its `must_go`
    (queue empty) is `remaining_s <= 0` here."""

    mode: str = 'horizon_fraction'
    value: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in REQUEST_MODES:
            raise ValueError(f'request mode {self.mode!r} is not one of {REQUEST_MODES}')
        hi = 1.0 if self.mode == 'horizon_fraction' else 3600.0
        if not (math.isfinite(self.value) and 0 <= self.value <= hi):
            raise ValueError(f'request {self.mode} value {self.value} is outside [0, {hi}]')

    def should_request(self, now: float, remaining_s: float, expected_delay_s: float,
                       chunk_span_s: float, last_request_s: float | None) -> bool:
        if last_request_s is None or remaining_s <= 0:
            return True
        if self.mode == 'period_s':
            return now - last_request_s >= self.value
        threshold = self.value * chunk_span_s if self.mode == 'horizon_fraction' else self.value
        return remaining_s - expected_delay_s <= threshold
