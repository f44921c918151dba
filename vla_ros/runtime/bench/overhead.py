"""The non-model overhead of one control cycle, as the node pays it.

Measured per cycle, on the parent's clock: camera frames from the parent into the inference
process and on to the model's inputs there (write into the frame ring, the request over the
pipe, the child's view + preprocessing, its answer), then the chunk merged into an
ActionQueue, one queue lookup, one safety-filter step and the command payload built for
publishing (`control_step`, given by the caller: the safety filter lives in adapters/, which
this layer does not import). The model itself never runs: the child stops at its inputs.

The same cycle with the frames pickled over the pipe (the transport before shared memory) is
measured interleaved with it (ABAB) in a second inference process, so the two figures come
from the same moments of machine load. CPU time (the parent thread's plus the child's) is
reported beside wall time: under load from other processes wall time mostly measures the
wait for a core at each wake-up (the child's, then the parent's), which no transport avoids.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from vla_ros.runtime.chunking.action_queue import ActionQueue
from vla_ros.runtime.chunking.merge import make_strategy
from vla_ros.runtime.policy.policy import Observation
from vla_ros.runtime.serving.policy_process import BackendSpec, PolicyProcess

CAMERA_HW = (480, 640)  # what a camera driver sends (VGA), whatever size the model reads


def _pct(values) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    return {'p50': float(np.percentile(a, 50)), 'p99': float(np.percentile(a, 99)),
            'mean': float(a.mean()), 'max': float(a.max()), 'n': int(a.size)}


def camera_observations(manifest, n: int, cameras: int, seed: int = 0) -> list[Observation]:
    """VGA rgb8 frames for every camera of the package, plus extra cameras up to `cameras`
    (sent through the transport like the others; the model preprocesses its own only)."""
    rng = np.random.default_rng(seed)
    names = [c.name for c in manifest.cameras]
    names += [f'extra{i}' for i in range(max(0, cameras - len(names)))]
    return [Observation({c: (rng.integers(0, 256, (*CAMERA_HW, 3), dtype=np.uint8), 'rgb8')
                         for c in names}, rng.uniform(-0.5, 0.5, manifest.state.dim),
                        'pick up the red block', float(i)) for i in range(n)]


def bench_overhead(package_dir: str, control_step: Callable[[np.ndarray], object], *,
                   cameras: int = 3, runs: int = 100, warmup: int = 10,
                   compare_pipe: bool = True) -> dict:
    """{'overhead_ms': {p50, p99, ...}, stages, and the pickled-frames cycle beside it}."""
    spec = BackendSpec(threads=1)
    shared = PolicyProcess(package_dir, spec, nice=0, warmup=1, shared_frames=True)
    pipe = (PolicyProcess(package_dir, spec, nice=0, warmup=1, shared_frames=False)
            if compare_pipe else None)
    m = shared.m
    observations = camera_observations(m, 4, cameras)
    try:
        chunk = shared.infer(observations[0])  # a real chunk of this model, merged each cycle
        queue = ActionQueue(m.action.dim, make_strategy('replace'))
        samples: dict[str, list[float]] = {k: [] for k in (
            'total', 'cpu_total', 'ring_write', 'frames_to_model_input',
            'child_view_and_preprocess', 'child_cpu', 'queue_merge', 'tick_and_publish',
            'pipe_total', 'pipe_frames_to_model_input')}
        for i in range(warmup + runs):
            obs = observations[i % len(observations)]
            obs = replace(obs, stamp_s=time.monotonic())
            c0, t0 = time.thread_time(), time.perf_counter()
            write_ms, child_ms, child_cpu = shared.prepare_ms(obs)
            t1 = time.perf_counter()
            now = time.monotonic()
            queue.add_chunk(replace(chunk, stamp_s=now), now=now)
            t2 = time.perf_counter()
            target = queue.target(now + 0.005)
            control_step(target.position)
            t3, c3 = time.perf_counter(), time.thread_time()
            if pipe is not None:
                p0 = time.perf_counter()
                pipe.prepare_ms(obs)
                p1 = time.perf_counter()
            if i < warmup:
                continue
            samples['total'].append((t3 - t0) * 1e3)
            samples['cpu_total'].append((c3 - c0) * 1e3 + child_cpu)
            samples['ring_write'].append(write_ms)
            samples['child_cpu'].append(child_cpu)
            samples['frames_to_model_input'].append((t1 - t0) * 1e3)
            samples['child_view_and_preprocess'].append(child_ms)
            samples['queue_merge'].append((t2 - t1) * 1e3)
            samples['tick_and_publish'].append((t3 - t2) * 1e3)
            if pipe is not None:
                samples['pipe_frames_to_model_input'].append((p1 - p0) * 1e3)
                samples['pipe_total'].append((p1 - p0 + t3 - t1) * 1e3)
    finally:
        shared.close()
        if pipe is not None:
            pipe.close()
    stages = {k: _pct(v) for k, v in samples.items() if v and k not in ('total', 'cpu_total')}
    total, cpu = _pct(samples['total']), _pct(samples['cpu_total'])
    out = {'overhead_ms': {'p50': total['p50'], 'p99': total['p99']},
           'overhead_cpu_ms': {'p50': cpu['p50'], 'p99': cpu['p99']},
           'overhead_stages_ms': stages,
           'overhead_setup': {'cameras_sent': len(observations[0].images),
                              'camera_hw': list(CAMERA_HW),
                              'cameras_preprocessed': len(m.cameras),
                              'model_input_hw': [[c.height, c.width] for c in m.cameras],
                              'runs': runs}}
    if pipe is not None:
        out['overhead_ms_pickled_frames'] = {'p50': stages['pipe_total']['p50'],
                                             'p99': stages['pipe_total']['p99']}
    return out
