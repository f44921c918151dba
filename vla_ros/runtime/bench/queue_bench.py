"""Closed-loop benchmark of chunk execution, without ROS (`vla-ros bench queue`).

A joint-space plant under position control with a velocity limit tracks a moving reference.
Chunks are the reference plus a residual (queue_sources.py: unimodal, bimodal, or sampled by
a real flow package, which rtc_inpaint / rtc_guided steer toward the executing plan). They
arrive after a latency with jitter and a tail (occasional slow calls). Simulated time, so the
numbers do not depend on the machine's load. Per strategy and scenario:
  tracking    rms |plant - reference| after warm-up
  dvel / dacc at each chunk switch, the change of the command's velocity (rad/s) and of its
              acceleration (rad/s^2) across the switch tick, minus what the reference itself
              does there: ordinary motion scores ~0, a discontinuity does not (a position step
              would count the motion itself)
  mode        bimodal only: rms distance of the command from the nearer of the two modes
              (ref +- mode): averaging two modes puts it between them, a failure
  under       share of chunks (requested after warm-up) whose delay in steps exceeded the
              estimate made when it was requested (what RTC's frozen prefix relies on)
  late        dvel split by that: the switches of chunks that came later than estimated
              (their frozen prefix ended before the switch) against those on time
The baseline is replace with latency compensation (LeRobot's latest_only with its dropping of
executed timesteps), not the naive client.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from vla_ros.runtime.bench.queue_sources import SCENARIOS, FlowResidual, ScriptedResidual
from vla_ros.runtime.chunking.action_queue import ActionQueue
from vla_ros.runtime.chunking.chunk import ActionChunk
from vla_ros.runtime.chunking.merge import GUIDED, STRATEGIES
from vla_ros.runtime.chunking.scheduling import LatencyEstimator, RequestPolicy


@dataclass(frozen=True)
class QueueBenchConfig:
    duration_s: float = 20.0
    control_rate_hz: float = 100.0
    dof: int = 6
    chunk_len: int = 20  # H (the flow scenario uses the package's)
    chunk_dt_s: float = 0.05  # 20 Hz actions: 1 s per chunk
    latency_s: float = 0.15
    jitter_s: float = 0.03  # std of the latency's normal jitter
    tail_prob: float = 0.05  # share of slow calls
    tail_s: float = 0.15  # their extra latency: exponential with this mean
    chunk_offset_std: float = 0.01  # rad, one draw per chunk and joint (unimodal)
    mode_rad: float = 0.05  # rad, the two modes' offset (bimodal)
    step_noise_std: float = 0.002  # rad, per action
    flow_rms_rad: float = 0.02  # rad, rms of the flow package's residuals
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
        if min(self.latency_s, self.jitter_s, self.tail_s) < 0 or not 0 <= self.tail_prob <= 1:
            raise ValueError('latency_s, jitter_s, tail_s must be >= 0, tail_prob in [0, 1]')
        if self.chunk_len < 2 or self.dof < 1:
            raise ValueError('chunk_len must be >= 2 and dof >= 1')


@dataclass(frozen=True)
class Case:
    strategy: str
    latency_compensation: bool = True
    scenario: str = 'unimodal'

    @property
    def label(self) -> str:
        return f'{self.strategy}{"" if self.latency_compensation else " (no compensation)"}'


@dataclass
class CaseResult:
    strategy: str
    latency_compensation: bool
    scenario: str
    tracking_rms_rad: float
    dvel_max_rad_s: float  # largest velocity change at a chunk switch, beyond the reference's
    dvel_mean_rad_s: float
    dacc_max_rad_s2: float  # largest acceleration change at a switch, beyond the reference's
    mode_rms_rad: float | None  # bimodal: rms distance from the nearer mode
    max_jump_position_rad: float  # largest tick-to-tick command change at a switch (motion too)
    stall_s: float  # time the plan ran dry after the first chunk
    under_estimated: float  # share of chunks whose delay exceeded the estimate
    chunks: int
    stale_chunks: int
    latency_p50_ms: float
    latency_p99_ms: float
    per_seed_dvel_max: list[float] = field(default_factory=list)
    dvel_max_on_time_rad_s: float | None = None  # switches of chunks within their estimate
    dvel_max_late_rad_s: float | None = None  # switches of chunks later than estimated
    late_switches: int = 0


class _Reference:
    """Smooth per-joint reference: two sinusoids per joint with seeded phases."""

    def __init__(self, cfg: QueueBenchConfig, rng: np.random.Generator) -> None:
        self.freqs = rng.uniform(0.15, 0.4, size=(2, cfg.dof))
        self.phases = rng.uniform(0, 2 * np.pi, size=(2, cfg.dof))
        self.amp = cfg.amplitude

    def __call__(self, t: np.ndarray | float) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))[:, None, None]
        return self.amp * np.sum(np.sin(2 * np.pi * self.freqs * t + self.phases), axis=1)


def latency_draw(cfg: QueueBenchConfig, rng: np.random.Generator) -> float:
    latency = max(cfg.latency_s + rng.normal(0, cfg.jitter_s), 0.3 * cfg.latency_s)
    if rng.random() < cfg.tail_prob:
        latency += rng.exponential(cfg.tail_s)
    return latency


def _source(cfg: QueueBenchConfig, scenario: str, flow=None):
    if scenario == 'flow':
        if flow is None:
            raise ValueError('the flow scenario needs a flow package (--flow-package)')
        return flow
    return ScriptedResidual(scenario, cfg.dof, cfg.chunk_len, cfg.chunk_offset_std,
                            cfg.step_noise_std, cfg.mode_rad)


def run_case(cfg: QueueBenchConfig, case: Case, seed: int, flow=None) -> dict:
    rng = np.random.default_rng(seed)
    chunk_rng = np.random.default_rng(seed + 1000)  # residual draws, shared across cases
    ref = _Reference(cfg, rng)
    source = _source(cfg, case.scenario, flow)
    h = flow.h if case.scenario == 'flow' else cfg.chunk_len
    queue = ActionQueue(cfg.dof, case.strategy, interpolation=cfg.interpolation,
                        latency_compensation=case.latency_compensation)
    method = GUIDED.get(case.strategy)
    request = RequestPolicy('horizon_fraction', cfg.request_fraction)
    estimator = LatencyEstimator()
    dt = 1.0 / cfg.control_rate_hz
    span = cfg.chunk_dt_s * (h - 1)
    q = ref(0.0)[0].copy()
    in_flight = None  # (arrival, chunk, delay steps estimated at request)
    last_request = None
    errors, mode_err, latencies = [], [], []
    dvel, dacc, steps, late = [], [], [], []
    cmd: list[np.ndarray] = []  # commanded targets of the last four ticks
    switch_at: list[int] = []  # ticks with a merge, checked once 2 more ticks exist
    switch_late: list[bool] = []  # per switch: the chunk came later than estimated
    stall, stale, under, counted = 0.0, 0, 0, 0
    for j in range(int(cfg.duration_s * cfg.control_rate_hz)):
        t = j * dt
        if in_flight is not None and in_flight[0] <= t:
            arrival, chunk, est_steps = in_flight
            in_flight = None
            report = queue.add_chunk(chunk, now=arrival)
            was_late = math.ceil(report.latency_s / cfg.chunk_dt_s - 1e-6) > est_steps
            if chunk.stamp_s >= cfg.warmup_s:  # the estimator's cold start is not counted
                counted += 1
                under += was_late
            estimator.add(report.latency_s)
            latencies.append(report.latency_s)
            stale += report.stale
            if not report.stale:
                switch_at.append(j)
                switch_late.append(bool(was_late))
        if in_flight is None and request.should_request(
                t, queue.remaining_s(t), estimator.estimate_s(), span, last_request):
            last_request = t
            times = t + cfg.chunk_dt_s * np.arange(h)
            d = estimator.delay_steps(cfg.chunk_dt_s)
            prefix = None
            if method is not None and case.scenario == 'flow':
                g = queue.guidance_prefix(t, cfg.chunk_dt_s, h)
                if g is not None:
                    prefix = (g[0] - ref(times), g[1], d, method)
            actions = ref(times) + source(chunk_rng, prefix)
            # Arrivals land between control ticks, as real inference does.
            in_flight = (t + latency_draw(cfg, rng),
                         ActionChunk(stamp_s=t, dt_s=cfg.chunk_dt_s, actions=actions), d)
        target = queue.target(t)
        if (target is None or target.starved) and queue.chunks_merged:
            stall += dt  # waiting for the very first chunk is start-up, not a stall
        if target is not None:
            cmd = [*cmd[-3:], target.position]
            if len(cmd) == 4 and switch_at and switch_at[0] == j - 1:
                # Command differences around the switch tick j - 1, minus the reference's.
                r = ref(dt * np.arange(j - 3, j + 1))
                c = np.array(cmd) - r
                # Both second differences that hold the crossing step c2 - c1: a position
                # step d scores d / dt, a velocity kink dv scores dv.
                dvel.append(float(max(np.max(np.abs(c[2] - 2 * c[1] + c[0])),
                                      np.max(np.abs(c[3] - 2 * c[2] + c[1])))) / dt)
                dacc.append(float(np.max(np.abs(c[3] - 3 * c[2] + 3 * c[1] - c[0]))) / dt ** 2)
                steps.append(float(np.max(np.abs(cmd[2] - cmd[1]))))
                late.append(switch_late[0])
                switch_at.pop(0)
                switch_late.pop(0)
            elif switch_at and switch_at[0] < j - 1:
                switch_at.pop(0)
                switch_late.pop(0)
            step = np.clip(target.position - q, -cfg.velocity_limit * dt,
                           cfg.velocity_limit * dt)
            q = q + step
            if t >= cfg.warmup_s and case.scenario == 'bimodal':
                r = ref(t)[0]
                mode_err.append(min(np.sqrt(np.mean((target.position - r - s) ** 2))
                                    for s in (cfg.mode_rad, -cfg.mode_rad)))
        if t >= cfg.warmup_s:
            errors.append(np.abs(q - ref(t)[0]))
    err = np.array(errors)
    return {
        'tracking_rms': float(np.sqrt(np.mean(err ** 2))),
        'dvel': dvel or [0.0], 'dacc': dacc or [0.0], 'step': steps or [0.0],
        'late': late or [False],
        'mode_sq': [e ** 2 for e in mode_err],
        'stall': stall, 'chunks': queue.chunks_merged, 'stale': stale,
        'under': under, 'counted': counted, 'latencies': latencies,
    }


def default_cases(scenarios: tuple[str, ...] = ('unimodal', 'bimodal')) -> list[Case]:
    cases = []
    for sc in scenarios:
        cases.append(Case('replace', False, sc))
        for s in STRATEGIES:
            if s in GUIDED and sc != 'flow':
                continue  # a scripted chunk has no sampler to steer
            cases.append(Case(s, True, sc))
    return cases


def run_bench(cfg: QueueBenchConfig, cases: list[Case] | None = None,
              flow: FlowResidual | None = None) -> list[CaseResult]:
    results = []
    for case in cases or default_cases(tuple(s for s in SCENARIOS
                                             if s != 'flow' or flow is not None)):
        runs = [run_case(cfg, case, seed, flow) for seed in cfg.seeds]
        lat = np.concatenate([r['latencies'] for r in runs]) * 1000
        mode_sq = [x for r in runs for x in r['mode_sq']]
        dv = [x for r in runs for x in r['dvel']]
        lt = [x for r in runs for x in r['late']]
        on_time = [v for v, x in zip(dv, lt, strict=True) if not x]
        late = [v for v, x in zip(dv, lt, strict=True) if x]
        results.append(CaseResult(
            strategy=case.strategy, latency_compensation=case.latency_compensation,
            scenario=case.scenario,
            tracking_rms_rad=float(np.sqrt(np.mean([r['tracking_rms'] ** 2 for r in runs]))),
            dvel_max_rad_s=float(max(dv)), dvel_mean_rad_s=float(np.mean(dv)),
            dacc_max_rad_s2=float(max(x for r in runs for x in r['dacc'])),
            mode_rms_rad=float(np.sqrt(np.mean(mode_sq))) if mode_sq else None,
            max_jump_position_rad=float(max(x for r in runs for x in r['step'])),
            stall_s=float(np.mean([r['stall'] for r in runs])),
            under_estimated=(sum(r['under'] for r in runs)
                             / max(sum(r['counted'] for r in runs), 1)),
            chunks=sum(r['chunks'] for r in runs),
            stale_chunks=sum(r['stale'] for r in runs),
            latency_p50_ms=float(np.median(lat)) if len(lat) else math.nan,
            latency_p99_ms=float(np.percentile(lat, 99)) if len(lat) else math.nan,
            per_seed_dvel_max=[float(max(r['dvel'])) for r in runs],
            dvel_max_on_time_rad_s=float(max(on_time)) if on_time else None,
            dvel_max_late_rad_s=float(max(late)) if late else None,
            late_switches=len(late)))
    return results


def summarize(cfg: QueueBenchConfig, results: list[CaseResult], flow_package: str = ''
              ) -> dict:
    """Adds per scenario the headline: the smoothest strategy against compensated replace."""
    headlines = {}
    for sc in dict.fromkeys(r.scenario for r in results):
        rows = [r for r in results if r.scenario == sc]
        base = next((r for r in rows if r.strategy == 'replace' and r.latency_compensation),
                    None)
        others = [r for r in rows if r.latency_compensation and r.strategy != 'replace']
        if base is None or not others:
            continue
        best = min(others, key=lambda r: (r.dvel_max_rad_s, r.tracking_rms_rad))
        headlines[sc] = {
            'baseline': 'replace with latency compensation', 'best': best.strategy,
            'dvel_reduction_x': base.dvel_max_rad_s / max(best.dvel_max_rad_s, 1e-12),
            'tracking_rms_ratio': best.tracking_rms_rad / base.tracking_rms_rad}
    return {'config': asdict(cfg), 'flow_package': flow_package,
            'results': [asdict(r) for r in results], 'headline': headlines}
