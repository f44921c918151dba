"""Early-exit decisions: action-consistency metrics and A1/DeeR threshold calibration.

Metrics compare the actions of two consecutive exits per chunk step over the action vector
and average over the horizon (A1 `ActionValueNet.get_delta`): cosine (1 - cos of the vectors
normalized with eps 1e-5), l2 (A1's "L2": the RMS of the difference), l2_norm (its Euclidean
norm, what packages calibrated before called l2), mean_abs (A1's "mean"), max_abs ("max").
They run on the model-space (normalized) actions, by default of the named dimensions only
(padded dimensions carry no trained meaning); A1 compares all fixed_action_dim entries.

Exit semantics, as A1's calibration sets them up: the first exit is the reference (A1's layer-0
anchor), so its action is computed but no decision is taken there; threshold values[k] is
checked at exit k + 1, comparing its action with exit k's; the last exit always stops.

Calibration (A1 `value_net.set_threshold`): with delta[k, n] the discrepancy at decision k for
sample n, an exit distribution q over decisions, and a filtered quantile: walk the decisions in
order; at decision k, among the samples not yet exited, take the floor(N q_k)-th smallest
delta as T_k, and mark every remaining sample with delta <= T_k as exited. When that quota is
0 or larger than the samples left, T_k stays at the sentinel -1e8 (nobody exits there), as
A1's loop leaves it. The last threshold is 1e8 (always stop). Pure numpy (scipy's gamma pdf is
replaced by its closed form).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

METRICS = ('cosine', 'l2', 'l2_norm', 'mean_abs', 'max_abs')
DISTRIBUTIONS = ('exp', 'gauss', 'gamma')
LAST_THRESHOLD = 1e8
NEVER = -1e8  # A1's initial threshold: no discrepancy is this small


def discrepancy(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """(..., H, A) x (..., H, A) -> (...): the metric per step, averaged over H."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if metric == 'cosine':  # F.normalize(p=2, eps=1e-5) on both, then the dot product
        na = np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-5)
        nb = np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-5)
        per_step = 1.0 - np.sum((a / na) * (b / nb), -1)
    elif metric == 'l2':
        per_step = np.sqrt(np.mean((a - b) ** 2, -1))
    elif metric == 'l2_norm':
        per_step = np.linalg.norm(a - b, axis=-1)
    elif metric == 'mean_abs':
        per_step = np.mean(np.abs(a - b), -1)
    elif metric == 'max_abs':
        per_step = np.max(np.abs(a - b), -1)
    else:
        raise ValueError(f'metric {metric!r} is not one of {METRICS}')
    return per_step.mean(-1)


def exit_distribution(kind: str, ratio: float, num_decisions: int,
                      skip_first: bool = False) -> np.ndarray:
    """q over decisions k = 1..K (A1): exp: ratio^k; gauss: exp(-(k - 1 - ratio)^2 / 2);
    gamma: gamma pdf(k; shape=ratio, scale=2). Normalized; skip_first zeroes q_1 (A1 does so
    for 7B/8B LLMs)."""
    k = np.arange(1, num_decisions + 1, dtype=np.float64)
    if kind == 'exp':
        q = ratio ** k
    elif kind == 'gauss':
        q = np.exp(-((k - 1 - ratio) ** 2) / 2.0)
    elif kind == 'gamma':
        shape, scale = ratio, 2.0
        q = k ** (shape - 1) * np.exp(-k / scale) / (math.gamma(shape) * scale ** shape)
    else:
        raise ValueError(f'distribution {kind!r} is not one of {DISTRIBUTIONS}')
    if skip_first:
        q[0] = 0.0
    total = q.sum()
    if not total > 0:
        raise ValueError(f'{kind} distribution with ratio {ratio} puts no mass on any exit')
    return q / total


def filtered_quantile_thresholds(delta: np.ndarray, q: np.ndarray) -> np.ndarray:
    """A1's filtered quantile. delta (K, N): decision k's discrepancy for sample n; q (K,):
    the exit distribution over the K decisions. Returns K thresholds, the last 1e8."""
    delta = np.asarray(delta, np.float64)
    num_k, n = delta.shape
    if q.shape != (num_k,):
        raise ValueError(f'q has shape {q.shape}, expected ({num_k},)')
    thresholds = np.full(num_k, LAST_THRESHOLD)
    filtered = np.zeros(n, bool)
    for k in range(num_k - 1):
        order = np.argsort(delta[k], kind='stable')
        remaining = order[~filtered[order]]
        # A1 computes the quota from float32 probabilities.
        count = int(math.floor(np.float32(n) * np.float32(q[k])))
        if count <= 0 or count > remaining.size:
            thresholds[k] = NEVER  # A1 never reaches its quota here: nobody exits
            continue
        thresholds[k] = delta[k, remaining[count - 1]]
        filtered |= delta[k] <= thresholds[k]
    return thresholds


def simulate_exits(delta: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Decision index at which each sample stops (K - 1 = the last)."""
    num_k, n = delta.shape
    stop = np.full(n, num_k - 1)
    done = np.zeros(n, bool)
    for k in range(num_k - 1):
        hit = ~done & (delta[k] <= thresholds[k])
        stop[hit] = k
        done |= hit
    return stop


@dataclass(frozen=True)
class CalibratedSet:
    distribution: str
    ratio: float
    thresholds: np.ndarray  # (K,) one per decision, last 1e8
    compute_fraction: float  # mean layers run / num_layers over the samples
    exit_histogram: np.ndarray  # samples stopping at each exit (reference exit included)


def compute_fraction(stop: np.ndarray, exit_layers: tuple[int, ...], num_layers: int) -> float:
    """Decision k sits at exit k + 1 (exit 0 is the reference)."""
    layers = np.array(exit_layers)[stop + 1] + 1
    return float(np.mean(layers) / num_layers)


def calibrate(delta: np.ndarray, distribution: str, ratio: float, exit_layers: tuple[int, ...],
              num_layers: int, skip_first: bool = False) -> CalibratedSet:
    q = exit_distribution(distribution, ratio, delta.shape[0], skip_first)
    t = filtered_quantile_thresholds(delta, q)
    stop = simulate_exits(delta, t)
    hist = np.bincount(stop + 1, minlength=len(exit_layers))
    return CalibratedSet(distribution, ratio, t,
                         compute_fraction(stop, exit_layers, num_layers), hist)


def calibrate_for_budget(delta: np.ndarray, distribution: str, budget: float,
                         exit_layers: tuple[int, ...], num_layers: int,
                         iterations: int = 40, skip_first: bool = False) -> CalibratedSet:
    """The distribution parameter whose thresholds use about `budget` of the backbone on the
    calibration data (bisection; compute grows with the exp ratio and the gauss/gamma
    centre)."""
    lo, hi = {'exp': (1e-3, 4.0), 'gauss': (-1.0, float(delta.shape[0]) + 1.0),
              'gamma': (0.05, 2.0 * delta.shape[0])}[distribution]
    best = None
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        s = calibrate(delta, distribution, mid, exit_layers, num_layers, skip_first)
        if best is None or abs(s.compute_fraction - budget) < abs(best.compute_fraction - budget):
            best = s
        # exp: a larger ratio spreads q deeper; gauss/gamma: a larger centre moves it deeper.
        if s.compute_fraction < budget:
            lo = mid
        else:
            hi = mid
    return best
