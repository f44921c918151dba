"""`vla-ros bench PKG`: latency, exits, compute and memory of a package, per backend and mode.

Every mode runs the same observations with the same noise per observation, so the action
deviation of early exit from full depth is measured on identical inputs, and every comparison
(early exit vs full depth, the truncated flow head vs full mode's head, ONNX Runtime vs torch
eager of the same weights) comes from one run and is reported as a ratio. Warm-up runs are
discarded.
Backends run interleaved (A B A B ..., one observation each in turn), so load from other
processes falls on all of them alike; the machine's load is recorded at the start and the
end; each backend's peak memory is measured alone in a fresh process (memory.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vla_ros.runtime.backends import Backend, load_backend
from vla_ros.runtime.bench.flops import gflops_report, inference_flops, matmul_ceiling
from vla_ros.runtime.bench.load import machine_load
from vla_ros.runtime.bench.memory import backend_memory
from vla_ros.runtime.bench.policy_costs import deadline_summary, flow_truncation
from vla_ros.runtime.package.loader import ModelPackage
from vla_ros.runtime.policy.policy import Observation, Policy, PolicyConfig

STAGES = ('preprocess', 'vision', 'embed', 'segment', 'head', 'total')


@dataclass(frozen=True)
class BenchConfig:
    warmup: int = 3
    runs: int = 20
    device: str = 'cpu'
    precision: str = 'fp32'
    threads: int | None = None
    threshold_sets: tuple[str, ...] = ()  # () = every set of the default's metric and dist.
    deadline_ms: float | None = None
    torch_checkpoint: str | None = None  # also run torch eager of the same weights
    data: str | None = None  # observation set; None = synthetic observations
    seed: int = 0

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.runs < 1:
            raise ValueError(f'warmup {self.warmup} must be >= 0 and runs {self.runs} >= 1')
        if self.deadline_ms is not None and self.deadline_ms <= 0:
            raise ValueError(f'deadline_ms {self.deadline_ms} must be > 0')


def synthetic_observations(pkg: ModelPackage, n: int, seed: int) -> list[Observation]:
    """Camera-sized random frames (640x480, as a driver would send) and random states."""
    rng = np.random.default_rng(seed)
    m = pkg.manifest
    out = []
    for i in range(n):
        images = {c.name: (rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), 'rgb8')
                  for c in m.cameras}
        out.append(Observation(images, rng.uniform(-0.5, 0.5, m.state.dim),
                               'pick up the red block', float(i)))
    return out


def _pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    return {'p50': float(np.percentile(a, 50)), 'p90': float(np.percentile(a, 90)),
            'p99': float(np.percentile(a, 99)), 'mean': float(a.mean()), 'max': float(a.max())}


def run_modes(policies: Mapping[str, Policy], config: PolicyConfig,
              observations: list[Observation], cfg: BenchConfig,
              deadline_ms: float | None = None) -> dict[str, tuple[dict, list[np.ndarray]]]:
    """One mode on every backend, interleaved: observation i runs on each backend in turn
    before observation i + 1."""
    for policy in policies.values():
        policy.set_config(config)
    acc = {n: {'timings': {s: [] for s in STAGES}, 'exits': [], 'fractions': [],
               'actions': [], 'hits': 0} for n in policies}
    for i in range(cfg.warmup + cfg.runs):
        obs = observations[i % len(observations)]
        for name, policy in policies.items():
            policy.rng = np.random.default_rng(cfg.seed + i)  # same noise per observation
            deadline = None if deadline_ms is None else time.monotonic() + deadline_ms / 1e3
            chunk = policy.infer(obs, deadline_s=deadline)
            if i < cfg.warmup:
                continue
            a = acc[name]
            for s in STAGES:
                a['timings'][s].append(chunk.timings_ms.get(s, 0.0))
            a['exits'].append(chunk.exit_layer)
            a['fractions'].append(chunk.info['compute_fraction'])
            a['actions'].append(chunk.actions)
            a['hits'] += chunk.info['deadline_hit']
    out = {}
    for name, a in acc.items():
        layers, counts = np.unique(a['exits'], return_counts=True)
        out[name] = ({
            'latency_ms': {s: _pct(v) for s, v in a['timings'].items()},
            'exit_histogram': {str(int(k)): int(c)
                               for k, c in zip(layers, counts, strict=True)},
            'backbone_compute_fraction': float(np.mean(a['fractions'])),
            'deadline_hits': a['hits'],
            'total_ms_samples': a['timings']['total'],
            'exit_layer_samples': [int(e) for e in a['exits']],
        }, a['actions'])
    return out


def run_mode(policy: Policy, config: PolicyConfig, observations: list[Observation],
             cfg: BenchConfig, deadline_ms: float | None = None) -> tuple[dict, list[np.ndarray]]:
    return run_modes({'one': policy}, config, observations, cfg, deadline_ms)['one']


def bench_package(pkg: ModelPackage, cfg: BenchConfig,
                  progress: Callable[[str], None] = print,
                  extra_backends: Mapping[str, Callable[[], Backend]] | None = None,
                  memory_refs: Mapping[str, str] | None = None) -> dict:
    """Benchmarks ONNX Runtime and every backend of `extra_backends` (name -> factory) on the
    same observations. The torch reference lives on the offline side (it needs torch and the
    checkpoint): `vla_ros.export.torch_backend.bench_backends(cfg)` makes its factory, so this
    module never imports torch or the export layer; `memory_refs` names the same factories as
    'module:function' so that memory.py can measure each backend alone."""
    extra_backends = dict(extra_backends or {})
    m = pkg.manifest
    if cfg.data:
        from vla_ros.runtime.policy.observations import load_observations

        observations = load_observations(cfg.data)
    else:
        observations = synthetic_observations(pkg, max(cfg.runs, 4), cfg.seed)
    backends = [('onnxruntime', lambda: load_backend(pkg, 'onnxruntime', cfg.device,
                                                     cfg.precision, threads=cfg.threads))]
    if cfg.torch_checkpoint and 'torch' not in extra_backends:
        raise ValueError('torch_checkpoint is set but no torch backend was given: pass '
                         'vla_ros.export.torch_backend.bench_backends(cfg) as extra_backends')
    backends.extend(extra_backends.items())
    default = m.threshold_set()
    sets = list(cfg.threshold_sets)
    if not sets and default is not None:
        sets = [s.name for s in m.exits.threshold_sets if s.metric == default.metric and
                s.calibration.get('distribution') == default.calibration.get('distribution')]
    report = {'package': m.name, 'root': str(pkg.root), 'config': asdict(cfg),
              'observations': 'synthetic' if not cfg.data else cfg.data, 'backends': {},
              'order': 'interleaved', 'load_start': machine_load()}
    policies, entries = {}, {}
    for name, make in backends:
        t0 = time.perf_counter()
        backend = make()
        load_s = time.perf_counter() - t0
        policies[name] = Policy(pkg, backend, PolicyConfig(mode='full', seed=cfg.seed))
        entries[name] = {'describe': backend.describe(), 'load_s': load_s, 'modes': {}}
        progress(f'bench: {backend.describe()} loaded in {load_s:.1f} s')
    full = run_modes(policies, PolicyConfig(mode='full'), observations, cfg)
    for name in policies:
        entries[name]['modes']['full'] = full[name][0]
        progress(_line(name, 'full', full[name][0]))
    # FLOPs of one profiled full-depth inference, against ONNX Runtime's matmul here.
    # (CPU runs only: the count comes from ONNX Runtime's CPU profile.)
    cpu = cfg.device == 'cpu'
    flop = inference_flops(pkg, observations[0], cfg.threads) if cpu else None
    ceiling = matmul_ceiling(cfg.threads) if cpu else None
    for name in policies:
        if cpu:
            g = gflops_report(flop['flop'],
                              full[name][0]['latency_ms']['total']['p50'], ceiling)
            entries[name]['gflops'] = {**g, 'flop_by_graph': flop['flop_by_graph']}
            progress(f'bench: {name} {g["achieved"]:.1f} GFLOP/s of a {g["ceiling"]:.1f} '
                     f'GFLOP/s matmul ceiling ({g["fraction"]:.0%})')
    for ts in sets:
        res = run_modes(policies, PolicyConfig(mode='early_exit', threshold_set=ts),
                        observations, cfg)
        for name, (r, acts) in res.items():
            r['action_deviation_from_full'] = _deviation(acts, full[name][1])
            r['latency_ratio_to_full_p50'] = (r['latency_ms']['total']['p50']
                                              / full[name][0]['latency_ms']['total']['p50'])
            r['expected_compute_fraction'] = m.threshold_set(ts).expected_compute_fraction
            entries[name]['modes'][f'early_exit:{ts}'] = r
            progress(_line(name, f'early_exit {ts}', r))
    if cfg.deadline_ms is not None:
        # Full depth under a deadline: the deadline alone decides where to stop.
        res = run_modes(policies, PolicyConfig(mode='full'), observations, cfg,
                        deadline_ms=cfg.deadline_ms)
        for name, (r, acts) in res.items():
            r.update(deadline_summary(policies[name], cfg.deadline_ms, r['total_ms_samples'],
                                      r['exit_layer_samples']))
            r['action_deviation_from_full'] = _deviation(acts, full[name][1])
            entries[name]['modes']['deadline'] = r
            progress(_line(name, f'deadline {cfg.deadline_ms:g} ms', r)
                     + f'  bound {r["bound_ms"]:.1f} ms {"met" if r["met"] else "NOT met"}')
    for name, policy in policies.items():
        entry = entries[name]
        entry['segment_ms_estimate'] = policy.costs.segment_estimates(0.5)
        fl = flow_truncation(policy, observations, cfg.warmup, cfg.runs, cfg.seed)
        if fl:
            entry['flow_truncation'] = fl
            ratios = ' '.join(f'{r:.2f}' for r in fl['head_ratio_vs_full'])
            progress(f'bench: {name} truncated flow head to each exit / full mode head: '
                     f'{ratios} (target <= {fl["target_ratio"]})')
        policy.close()
        report['backends'][name] = entry
    for name in policies:  # alone, in fresh processes, after the timed runs
        refs = dict(memory_refs or {})
        if name == 'onnxruntime' or name in refs:
            mem = backend_memory(str(pkg.root), name, cfg, refs.get(name))
        else:
            mem = {'error': 'no module:function given to measure it alone'}
        report['backends'][name]['memory'] = mem
        report['backends'][name]['peak_rss_mb'] = mem.get('peak_rss_mb')
    report['load_end'] = machine_load()
    if 'torch' in report['backends']:
        ort_full = report['backends']['onnxruntime']['modes']['full']['latency_ms']['total']
        pt_full = report['backends']['torch']['modes']['full']['latency_ms']['total']
        report['torch_over_onnxruntime_p50'] = pt_full['p50'] / ort_full['p50']
        progress(f'bench: full depth p50: torch eager / onnxruntime = '
                 f'{report["torch_over_onnxruntime_p50"]:.2f}x')
    return report


def _deviation(actions: list[np.ndarray], reference: list[np.ndarray]) -> dict[str, float]:
    diff = np.abs(np.stack(actions) - np.stack(reference))
    return {'mean_abs': float(diff.mean()), 'max_abs': float(diff.max())}


def _line(backend: str, mode: str, res: dict) -> str:
    lat = res['latency_ms']['total']
    return (f'bench: {backend:<11} {mode:<28} p50 {lat["p50"]:8.1f} ms  p90 {lat["p90"]:8.1f}  '
            f'p99 {lat["p99"]:8.1f}  compute {res["backbone_compute_fraction"]:.2f}  exits '
            f'{res["exit_histogram"]}')


def write_plots(report: dict, out_dir: str | Path) -> list[Path]:
    """Latency and exit histograms per backend (matplotlib, headless)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for backend, entry in report['backends'].items():
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        names = list(entry['modes'])
        p50 = [entry['modes'][n]['latency_ms']['total']['p50'] for n in names]
        p99 = [entry['modes'][n]['latency_ms']['total']['p99'] for n in names]
        x = np.arange(len(names))
        ax1.bar(x - 0.2, p50, 0.4, label='p50')
        ax1.bar(x + 0.2, p99, 0.4, label='p99')
        ax1.set_xticks(x, [n.replace('early_exit:', 'ee ') for n in names], rotation=30,
                       ha='right', fontsize=7)
        ax1.set_ylabel('latency (ms)')
        ax1.legend()
        for n in names:
            hist = entry['modes'][n]['exit_histogram']
            ax2.plot([int(k) for k in hist], list(hist.values()), marker='o', label=n)
        ax2.set_xlabel('exit layer')
        ax2.set_ylabel('observations')
        ax2.legend(fontsize=7)
        fig.suptitle(f'{report["package"]} - {entry["describe"]}')
        fig.tight_layout()
        path = out / f'bench_{backend}.png'
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def save_report(report: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report, indent=1) + '\n')
