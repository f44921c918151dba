"""Bench figures about the policy's own scheduling: the truncated flow head against full mode's
head, exit by exit, and whether deadline mode kept its bound.

flow_truncation: for each observation (same noise), full mode's head (one solve of num_steps
at the last exit) and early exit's head chain (a truncated_steps solve at every exit, each
warm-started from the exit before) run back to back, so load falls on both alike; the ratio
at exit k is the head time an inference that stops at exit k spends, over full mode's head
time, as the median of the per-observation ratios. Imports numpy and the runtime only.
"""

from __future__ import annotations

import numpy as np

from vla_ros.runtime.policy.policy import Observation, Policy

TRUNCATION_TARGET = 0.5  # truncated head <= 0.5x the full-flow head, at every exit


def _pct(values) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    return {'p50': float(np.percentile(a, 50)), 'p90': float(np.percentile(a, 90)),
            'p99': float(np.percentile(a, 99)), 'mean': float(a.mean()), 'max': float(a.max())}


def flow_truncation(policy: Policy, observations: list[Observation], warmup: int, runs: int,
                    seed: int = 0) -> dict | None:
    """Head time of early exit's truncated solves up to each exit against full mode's head."""
    m = policy.m
    if m.flow is None:
        return None
    cfg = policy.config
    steps_t = cfg.truncated_steps or m.flow.truncated_steps
    steps_f = cfg.num_steps or m.flow.num_steps
    n = len(policy.exits)
    full, chain = [], []  # per observation: full head ms; cumulative head ms per exit
    for i in range(warmup + runs):
        inputs = policy.prepare(observations[i % len(observations)])
        policy.rng = np.random.default_rng(seed + i)
        noise = policy.noise()
        run = policy.pipeline.start(inputs)
        while not run.done:
            run.advance()
        run.action(noise, steps_f)
        f = run.timings_ms['head']
        run = policy.pipeline.start(inputs)
        prev, cum = None, []
        while not run.done:
            run.advance()
            prev = run.action(noise if prev is None else prev, steps_t)
            cum.append(run.timings_ms['head'])
        if i >= warmup:
            full.append(f)
            chain.append(cum)
    full_a, chain_a = np.asarray(full), np.asarray(chain)  # (runs,), (runs, n)
    own = np.diff(chain_a, axis=1, prepend=0.0)  # each exit's own head work
    ratio = [float(np.median(chain_a[:, k] / full_a)) for k in range(n)]
    return {
        'truncated_steps': steps_t, 'full_steps': steps_f,
        'exit_layers': list(policy.exits),
        'head_ms_full': _pct(full),
        'head_ms_to_exit_p50': [float(np.median(chain_a[:, k])) for k in range(n)],
        # an inference stopping at exit k spends this much head time, over full mode's
        'head_ratio_vs_full': ratio,
        # the head work done at exit k alone (its context and its truncated steps)
        'exit_head_ratio_vs_full': [float(np.median(own[:, k] / full_a)) for k in range(n)],
        'target_ratio': TRUNCATION_TARGET,
        'met_at_exit': [r <= TRUNCATION_TARGET for r in ratio],
    }


def deadline_summary(policy: Policy, deadline_ms: float, total_ms: list[float],
                     exit_layers: list[int]) -> dict:
    """Whether p99 latency stayed within the deadline plus one segment (the largest median
    segment cost the policy measured), and, where it did not, how many of the late runs
    stopped at the first exit, which no schedule can make earlier."""
    seg = [s for s in policy.costs.segment_estimates(0.5) if s is not None]
    segment_ms = max(seg) if seg else 0.0
    bound = deadline_ms + segment_ms
    lat = np.asarray(total_ms, np.float64)
    first = np.asarray(exit_layers) == policy.exits[0]
    late = lat > bound
    return {'deadline_ms': deadline_ms, 'segment_ms': segment_ms, 'bound_ms': bound,
            'p99_ms': float(np.percentile(lat, 99)),
            'met': bool(np.percentile(lat, 99) <= bound),
            'late_runs': int(late.sum()), 'late_at_first_exit': int((late & first).sum()),
            'first_exit_ms_p50': float(np.median(lat[first])) if first.any() else None}
