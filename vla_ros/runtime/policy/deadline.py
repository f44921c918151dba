"""Deadline scheduling: measured cost estimates per exit and the decision to stop early.

Before each decoder segment after the first, the policy asks `CostModel.should_stop(now,
deadline, k, head)`: stop when the segment to exit k plus exit k's head (the head kind it
will run: its Euler steps, guided or not) would end past the deadline. Both costs are a
conservative quantile (default p90) of the last `window` measured samples of that very cost,
not a running mean: a mean under-predicts half the time, and p99 latency is what the bound
is about. Costs never measured are derived from measured ones, never taken as zero:
  segment k      a measured segment's cost scaled by the layers each one holds
  head (k, kind) the same kind at another exit, scaled by the head's depth there (A1's expert
                 runs layers 0..exit, so its head grows with the exit; other heads do not);
                 else another kind of head at the same depth scaled up by its step count
                 (never down: fewer steps are not assumed cheaper, since a flow head's
                 context costs the same whatever the steps)
The first exit always runs (there is no action to return before it), and its segment and
head are recorded before the second exit is decided, so even the first call of a fresh
policy decides from its own measurements. What stays unpredictable is a cost that jumps
past its recent quantile by more than one segment; the bound "deadline + one segment" is
for that. Clocks are the caller's (`now_s`), so the decision is tested without timing.
Imports numpy only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

HeadKind = tuple[int, str]  # (Euler steps, 'guided' | 'inpaint' | ''), (1, '') for one-shot heads


@dataclass(frozen=True)
class DeadlineConfig:
    quantile: float = 0.9  # of recent samples; p90 of each part keeps the sum's p99 close
    window: int = 32  # samples per cost: about 3 s of history at 10 Hz, so load changes show

    def __post_init__(self) -> None:
        if not 0.0 < self.quantile <= 1.0:
            raise ValueError(f'deadline quantile must be in (0, 1], got {self.quantile}')
        if self.window < 1:
            raise ValueError(f'deadline window must be >= 1, got {self.window}')


class CostModel:
    """Recent costs of one policy's segments and heads. Owned by the inference worker."""

    def __init__(self, segment_layers: Sequence[int], head_depths: Sequence[int],
                 config: DeadlineConfig | None = None) -> None:
        """segment_layers[k]: decoder layers segment k runs; head_depths[k]: what the head's
        cost grows with at exit k (1 everywhere for heads whose cost is the same at every
        exit)."""
        if len(segment_layers) != len(head_depths) or not segment_layers:
            raise ValueError('segment_layers and head_depths need one entry per exit')
        self.config = config or DeadlineConfig()
        self.layers = [max(1, int(n)) for n in segment_layers]
        self.depths = [max(1, int(n)) for n in head_depths]
        self._segments = [deque(maxlen=self.config.window) for _ in self.layers]
        self._heads: dict[tuple[int, HeadKind], deque] = {}

    # --- samples -----------------------------------------------------------------------------

    def record_segment(self, k: int, ms: float) -> None:
        self._segments[k].append(float(ms))

    def record_head(self, k: int, kind: HeadKind, ms: float) -> None:
        self._heads.setdefault((k, kind), deque(maxlen=self.config.window)).append(float(ms))

    # --- estimates ---------------------------------------------------------------------------

    def _q(self, samples: deque, quantile: float | None = None) -> float:
        return float(np.quantile(np.fromiter(samples, float), quantile or self.config.quantile))

    def segment_ms(self, k: int, quantile: float | None = None) -> float | None:
        """Estimated cost of segment k; None before any segment was measured."""
        if self._segments[k]:
            return self._q(self._segments[k], quantile)
        seen = [j for j, s in enumerate(self._segments) if s]
        if not seen:
            return None
        return max(self._q(self._segments[j], quantile) * self.layers[k] / self.layers[j]
                   for j in seen)

    def head_ms(self, k: int, kind: HeadKind, quantile: float | None = None) -> float | None:
        """Estimated cost of exit k's head of this kind; None before any head was measured."""
        if (k, kind) in self._heads:
            return self._q(self._heads[(k, kind)], quantile)
        same = [(j, s) for (j, c), s in self._heads.items() if c == kind]
        if same:
            return max(self._q(s, quantile) * self.depths[k] / self.depths[j] for j, s in same)
        other = [(j, c, s) for (j, c), s in self._heads.items() if c[1] == kind[1]] or [
            (j, c, s) for (j, c), s in self._heads.items()]
        if not other:
            return None
        return max(self._q(s, quantile) * self.depths[k] / self.depths[j]
                   * max(1.0, kind[0] / c[0]) for j, c, s in other)

    def exit_ms(self, k: int, kind: HeadKind) -> float:
        """Segment k plus its head; unknown parts count as 0 (nothing was measured yet)."""
        return (self.segment_ms(k) or 0.0) + (self.head_ms(k, kind) or 0.0)

    def should_stop(self, now_s: float, deadline_s: float, k: int, kind: HeadKind) -> bool:
        """True when running exit k (its segment and head) would end past the deadline."""
        return now_s + self.exit_ms(k, kind) / 1000.0 > deadline_s

    def segment_estimates(self, quantile: float | None = None) -> list[float | None]:
        return [self.segment_ms(k, quantile) for k in range(len(self.layers))]

    def head_estimates(self, kind: HeadKind, quantile: float | None = None
                       ) -> list[float | None]:
        return [self.head_ms(k, kind, quantile) for k in range(len(self.layers))]
