"""When to run the next inference, and how long inference takes.

The delay estimate is a percentile over a window of recent latencies, with the first samples
(cold start: allocator warm-up, engine build, first-call compilation) left out. A running
maximum would keep one early outlier forever, and a mean lets a few slow calls through; both
were root causes of chunk-boundary jumps reported against LeRobot (reference/anchors.md §5.2).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

REQUEST_MODES = ('horizon_fraction', 'horizon_s', 'period_s')


class LatencyEstimator:
    def __init__(self, window: int = 50, percentile: float = 90.0, warmup: int = 2,
                 initial_s: float = 0.1) -> None:
        if window < 1 or not 0 < percentile <= 100 or warmup < 0 or initial_s < 0:
            raise ValueError(f'bad latency estimator settings: window={window}, '
                             f'percentile={percentile}, warmup={warmup}, initial={initial_s}')
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
            return float(np.percentile(np.fromiter(self._samples, float), self.percentile))

    def delay_steps(self, dt_s: float) -> int:
        return math.ceil(self.estimate_s() / dt_s - 1e-9)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._samples)


@dataclass(frozen=True)
class RequestPolicy:
    """horizon_fraction: request when the plan left after the expected delay is at most
    `value` x the chunk's span (LeRobot's chunk_size_threshold, 0.5 by default);
    horizon_s: the same in seconds; period_s: every `value` seconds."""

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
