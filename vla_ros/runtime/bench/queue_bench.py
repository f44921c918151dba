"""Closed-loop benchmark of chunk execution, without ROS (`vla-ros bench queue`).

A joint-space plant under position control with a velocity limit tracks a moving reference.
A scripted chunk policy predicts the reference from each observation, with a per-chunk offset
and per-step noise (so consecutive chunks disagree, as a learned policy's do), and its chunks
arrive after an injected latency with jitter. The simulation runs in simulated time, so the
numbers do not depend on the machine's load. For each merge strategy and compensation setting
it reports tracking error, the largest jump of the commanded target at a chunk boundary
(position and velocity), and the time the queue ran dry.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from vla_ros.runtime.chunking.action_queue import ActionQueue
from vla_ros.runtime.chunking.chunk import ActionChunk
from vla_ros.runtime.chunking.merge import STRATEGIES
from vla_ros.runtime.chunking.scheduling import LatencyEstimator, RequestPolicy


@dataclass(frozen=True)
class QueueBenchConfig:
    duration_s: float = 20.0
    control_rate_hz: float = 100.0
    dof: int = 6
    chunk_len: int = 20  # H
    chunk_dt_s: float = 0.05  # 20 Hz actions: 1 s per chunk
    latency_s: float = 0.15
    jitter_s: float = 0.03  # std of the latency's normal jitter
    chunk_offset_std: float = 0.01  # rad, one draw per chunk and joint
    step_noise_std: float = 0.002  # rad, per action
    velocity_limit: float = 2.0  # rad/s, the plant's
    amplitude: float = 0.3  # rad, reference sinusoids
    request_fraction: float = 0.5
    interpolation: str = 'linear'
    warmup_s: float = 2.0  # excluded from tracking error
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        for name in ('duration_s', 'control_rate_hz', 'chunk_dt_s', 'velocity_limit'):
            if not getattr(self, name) > 0:
                raise ValueError(f'{name} must be > 0, got {getattr(self, name)}')
        if self.latency_s < 0 or self.jitter_s < 0:
            raise ValueError('latency_s and jitter_s must be >= 0')
        if self.chunk_len < 2 or self.dof < 1:
            raise ValueError('chunk_len must be >= 2 and dof >= 1')


@dataclass(frozen=True)
class Case:
    strategy: str
    latency_compensation: bool

    @property
    def label(self) -> str:
        return f'{self.strategy}{"" if self.latency_compensation else " (no compensation)"}'


@dataclass
class CaseResult:
    strategy: str
    latency_compensation: bool
    tracking_rms_rad: float
    tracking_max_rad: float
    max_jump_position_rad: float  # largest tick-to-tick command change at a chunk boundary
    max_jump_velocity_rad_s: float  # largest tick-to-tick velocity change at a boundary
    max_discontinuity_rad: float  # largest plan discontinuity at a merge instant
    stall_s: float  # time the plan ran dry after the first chunk
    chunks: int
    stale_chunks: int
    latency_p50_ms: float
    per_seed_max_jump_rad: list[float] = field(default_factory=list)


class _Reference:
    """Smooth per-joint reference: two sinusoids per joint with seeded phases."""

    def __init__(self, cfg: QueueBenchConfig, rng: np.random.Generator) -> None:
        self.freqs = rng.uniform(0.15, 0.4, size=(2, cfg.dof))
        self.phases = rng.uniform(0, 2 * np.pi, size=(2, cfg.dof))
        self.amp = cfg.amplitude

    def __call__(self, t: np.ndarray | float) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))[:, None, None]
        return self.amp * np.sum(np.sin(2 * np.pi * self.freqs * t + self.phases), axis=1)


def run_case(cfg: QueueBenchConfig, case: Case, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    ref = _Reference(cfg, rng)
    queue = ActionQueue(cfg.dof, case.strategy, interpolation=cfg.interpolation,
                        latency_compensation=case.latency_compensation)
    request = RequestPolicy('horizon_fraction', cfg.request_fraction)
    estimator = LatencyEstimator()
    dt = 1.0 / cfg.control_rate_hz
    span = cfg.chunk_dt_s * (cfg.chunk_len - 1)
    q = ref(0.0)[0].copy()
    in_flight: tuple[float, ActionChunk] | None = None
    last_request = None
    errors, disc, latencies = [], [0.0], []
    steps, accels = [0.0], [0.0]  # commanded change across merges, tick to tick
    cmd: list[np.ndarray] = []  # commanded targets of the last three ticks
    stall = 0.0
    stale = 0
    for j in range(int(cfg.duration_s * cfg.control_rate_hz)):
        t = j * dt
        merged = False
        if in_flight is not None and in_flight[0] <= t:
            arrival, chunk = in_flight
            in_flight = None
            report = queue.add_chunk(chunk, now=arrival)
            estimator.add(report.latency_s)
            latencies.append(report.latency_s)
            stale += report.stale
            merged = not report.stale
            disc.append(report.jump_position)
        if in_flight is None and request.should_request(
                t, queue.remaining_s(t), estimator.estimate_s(), span, last_request):
            last_request = t
            times = t + cfg.chunk_dt_s * np.arange(cfg.chunk_len)
            actions = (ref(times) + rng.normal(0, cfg.chunk_offset_std, cfg.dof)
                       + rng.normal(0, cfg.step_noise_std, (cfg.chunk_len, cfg.dof)))
            latency = max(cfg.latency_s + rng.normal(0, cfg.jitter_s), 0.3 * cfg.latency_s)
            # Arrivals land between control ticks, as real inference does.
            in_flight = (t + latency, ActionChunk(stamp_s=t, dt_s=cfg.chunk_dt_s,
                                                  actions=actions))
        target = queue.target(t)
        if (target is None or target.starved) and queue.chunks_merged:
            stall += dt  # waiting for the very first chunk is start-up, not a stall
        if target is not None:
            cmd = [*cmd[-2:], target.position]
            if merged and len(cmd) >= 2:
                steps.append(float(np.max(np.abs(cmd[-1] - cmd[-2]))))
            if merged and len(cmd) == 3:
                accels.append(float(np.max(np.abs(cmd[-1] - 2 * cmd[-2] + cmd[-3]))) / dt)
            step = np.clip(target.position - q, -cfg.velocity_limit * dt,
                           cfg.velocity_limit * dt)
            q = q + step
        if t >= cfg.warmup_s:
            errors.append(np.abs(q - ref(t)[0]))
    err = np.array(errors)
    return {
        'tracking_rms': float(np.sqrt(np.mean(err ** 2))),
        'tracking_max': float(np.max(err)),
        'step': float(np.max(steps)),
        'dvel': float(np.max(accels)),
        'disc': float(np.max(disc)),
        'stall': stall,
        'chunks': queue.chunks_merged,
        'stale': stale,
        'latencies': latencies,
    }


def default_cases() -> list[Case]:
    cases = [Case('replace', False)]
    cases += [Case(s, True) for s in STRATEGIES if s != 'rtc_inpaint']
    return cases


def run_bench(cfg: QueueBenchConfig, cases: list[Case] | None = None) -> list[CaseResult]:
    results = []
    for case in cases or default_cases():
        runs = [run_case(cfg, case, seed) for seed in cfg.seeds]
        lat = np.concatenate([r['latencies'] for r in runs])
        results.append(CaseResult(
            strategy=case.strategy, latency_compensation=case.latency_compensation,
            tracking_rms_rad=float(np.sqrt(np.mean([r['tracking_rms'] ** 2 for r in runs]))),
            tracking_max_rad=max(r['tracking_max'] for r in runs),
            max_jump_position_rad=max(r['step'] for r in runs),
            max_jump_velocity_rad_s=max(r['dvel'] for r in runs),
            max_discontinuity_rad=max(r['disc'] for r in runs),
            stall_s=float(np.mean([r['stall'] for r in runs])),
            chunks=sum(r['chunks'] for r in runs),
            stale_chunks=sum(r['stale'] for r in runs),
            latency_p50_ms=float(np.median(lat) * 1000) if len(lat) else math.nan,
            per_seed_max_jump_rad=[r['step'] for r in runs]))
    return results


def summarize(cfg: QueueBenchConfig, results: list[CaseResult]) -> dict:
    """Adds the headline ratio: the best compensated blend against naive replace."""
    base = next((r for r in results
                 if r.strategy == 'replace' and not r.latency_compensation), None)
    blends = [r for r in results if r.latency_compensation and r.strategy != 'replace']
    headline = None
    if base is not None and blends:
        best = min(blends, key=lambda r: (r.max_jump_position_rad, r.tracking_rms_rad))
        headline = {
            'baseline': 'replace without latency compensation',
            'best': best.strategy,
            'jump_reduction_x': base.max_jump_position_rad / max(best.max_jump_position_rad,
                                                                  1e-12),
            'tracking_rms_ratio': best.tracking_rms_rad / base.tracking_rms_rad,
        }
    return {'config': asdict(cfg), 'results': [asdict(r) for r in results],
            'headline': headline}


def format_table(summary: dict) -> str:
    cfg = summary['config']
    lines = [f'queue bench: {cfg["dof"]} joints, H={cfg["chunk_len"]} x '
             f'{cfg["chunk_dt_s"] * 1000:g} ms, latency {cfg["latency_s"] * 1000:g} '
             f'+/- {cfg["jitter_s"] * 1000:g} ms, control {cfg["control_rate_hz"]:g} Hz, '
             f'{len(cfg["seeds"])} seeds x {cfg["duration_s"]:g} s',
             'jump = largest tick-to-tick change of the command at a chunk boundary; '
             'disc = plan discontinuity at the merge instant',
             f'{"strategy":<36}{"track rms":>10}{"track max":>10}{"jump pos":>10}'
             f'{"jump vel":>10}{"disc":>9}{"stall s":>9}',
             f'{"":<36}{"mrad":>10}{"mrad":>10}{"mrad":>10}{"rad/s":>10}{"mrad":>9}{"":>9}']
    for r in summary['results']:
        label = Case(r['strategy'], r['latency_compensation']).label
        lines.append(f'{label:<36}{r["tracking_rms_rad"] * 1000:>10.2f}'
                     f'{r["tracking_max_rad"] * 1000:>10.2f}'
                     f'{r["max_jump_position_rad"] * 1000:>10.2f}'
                     f'{r["max_jump_velocity_rad_s"]:>10.3f}'
                     f'{r["max_discontinuity_rad"] * 1000:>9.2f}{r["stall_s"]:>9.3f}')
    h = summary['headline']
    if h:
        lines.append(f'best blend {h["best"]}: max boundary jump {h["jump_reduction_x"]:.1f}x '
                     f'smaller than {h["baseline"]}, tracking rms x{h["tracking_rms_ratio"]:.2f}')
    return '\n'.join(lines)
