"""`vla-ros calibrate`: early-exit thresholds from recorded observations, into the package.

For every observation the policy computes the action at every exit exactly as it will at run
time (truncated flow matching with warm start by default), the discrepancy between
consecutive exits gives the (K - 1, N) matrix of A1/DeeR, and for each metric, exit
distribution and budget the distribution's parameter is searched so that the filtered-quantile
thresholds use about that fraction of the backbone on this data. Each set records how it was
made and its expected compute fraction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla_ros.runtime.backends import load_backend
from vla_ros.runtime.package.loader import ModelPackage, load_package, update_manifest
from vla_ros.runtime.package.manifest import ThresholdSet
from vla_ros.runtime.policy.early_exit import (
    DISTRIBUTIONS,
    METRICS,
    calibrate_for_budget,
    discrepancy,
)
from vla_ros.runtime.policy.observations import load_observations
from vla_ros.runtime.policy.policy import Policy, PolicyConfig


@dataclass(frozen=True)
class CalibrationConfig:
    metrics: tuple[str, ...] = METRICS
    distributions: tuple[str, ...] = DISTRIBUTIONS
    budgets: tuple[float, ...] = (0.25, 0.5, 0.75)
    truncated: bool = True
    default: str | None = None  # default set name; None: cosine, exp, the budget nearest 0.5
    seed: int = 0
    # A1's choices: one sample per horizon step (its ActionValueNet keeps every step), the
    # metric over all model action dims, and q_1 = 0 (A1 does so for 7B/8B LLMs).
    per_step: bool = False
    all_dims: bool = False
    skip_first: bool = False

    def __post_init__(self) -> None:
        bad = [m for m in self.metrics if m not in METRICS]
        bad += [d for d in self.distributions if d not in DISTRIBUTIONS]
        bad += [str(b) for b in self.budgets if not 0 < b <= 1]
        if bad or not (self.metrics and self.distributions and self.budgets):
            raise ValueError(f'bad calibration settings {bad}: metrics from {METRICS}, '
                             f'distributions from {DISTRIBUTIONS}, budgets in (0, 1]')


def delta_matrices(policy: Policy, observations, metrics, truncated: bool,
                   progress: Callable[[str], None] = print, per_step: bool = False,
                   all_dims: bool = False) -> dict[str, np.ndarray]:
    """(K - 1, N) per metric; N = observations, or observations x H with per_step."""
    m = policy.m
    dim = m.action.model_dim if all_dims else m.action.dim
    per_metric = {k: [] for k in metrics}
    for i, obs in enumerate(observations):
        acts = policy.actions_at_all_exits(policy.prepare(obs), truncated=truncated)
        for metric in metrics:
            rows = [discrepancy(acts[k][:, None, :dim], acts[k + 1][:, None, :dim], metric)
                    for k in range(len(acts) - 1)]  # (K - 1) x (H,)
            cols = np.array(rows).T if per_step else np.array(rows).mean(-1)[None]
            per_metric[metric].extend(cols.tolist())
        if (i + 1) % max(len(observations) // 10, 1) == 0:
            progress(f'calibrate: {i + 1}/{len(observations)} observations')
    return {k: np.array(v, np.float64).T for k, v in per_metric.items()}  # (K - 1, N)


def calibrate_package(package_dir: str | Path, data: str | Path,
                      config: CalibrationConfig = CalibrationConfig(),
                      progress: Callable[[str], None] = print) -> ModelPackage:
    pkg = load_package(package_dir)
    m = pkg.manifest
    if len(m.exits.layers) < 3:
        raise ValueError(f'{m.name} has {len(m.exits.layers)} exits; early exit needs at least '
                         '3 (a reference exit, one decision, the last)')
    observations = load_observations(data)
    if len(observations) < 10:
        raise ValueError(f'{data} holds {len(observations)} observations; calibrate on at '
                         'least 10 (hundreds for stable thresholds)')
    missing = {c.name for c in m.cameras if c.required} - set(observations[0].images)
    if missing:
        raise ValueError(f'{data} lacks the cameras {sorted(missing)} the model needs')
    policy = Policy(pkg, load_backend(pkg), PolicyConfig(mode='full', seed=config.seed))
    progress(f'calibrate: {len(observations)} observations, {len(m.exits.layers)} exits, '
             f'{"truncated flow" if config.truncated and m.flow else "full solves"}')
    deltas = delta_matrices(policy, observations, config.metrics,
                            config.truncated and m.flow is not None, progress,
                            config.per_step, config.all_dims)
    data_sha = hashlib.sha256(Path(data).read_bytes()).hexdigest()
    sets = []
    for metric, delta in deltas.items():
        for dist in config.distributions:
            for budget in config.budgets:
                s = calibrate_for_budget(delta, dist, budget, m.exits.layers,
                                         m.exits.num_layers, skip_first=config.skip_first)
                sets.append(ThresholdSet(
                    dims='all' if config.all_dims else 'named',
                    name=f'{metric}-{dist}-{round(budget * 100)}', metric=metric,
                    values=tuple(float(v) for v in s.thresholds),
                    expected_compute_fraction=s.compute_fraction,
                    calibration={
                        'method': 'A1 filtered quantile', 'distribution': dist,
                        'ratio': s.ratio, 'budget': budget, 'samples': len(observations),
                        'exit_histogram': s.exit_histogram.tolist(),
                        'truncated_flow': bool(config.truncated and m.flow),
                        'per_step': config.per_step, 'skip_first': config.skip_first,
                        **({'l2': 'rms'} if metric == 'l2' else {}),
                        'data_sha256': data_sha,
                        'delta_median': np.median(delta, axis=1).tolist()}))
    default = config.default or _nearest(sets, 'cosine' if 'cosine' in deltas else
                                         next(iter(deltas)), 0.5)
    new = m.with_threshold_sets(tuple(sets), default)
    out = update_manifest(pkg, new)
    progress(f'calibrate: wrote {len(sets)} threshold sets to {pkg.root}, default {default}')
    return out


def _nearest(sets: list[ThresholdSet], metric: str, budget: float) -> str:
    pool = [s for s in sets if s.metric == metric and s.calibration['distribution'] == 'exp']
    pool = pool or [s for s in sets if s.metric == metric]
    return min(pool, key=lambda s: abs(s.calibration['budget'] - budget)).name
