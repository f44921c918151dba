"""A package's graphs exported side by side in worker processes.

torch's dynamo exporter spends seconds of single-threaded Python per graph (tracing,
decompositions, the ONNX optimizer) whatever the graph's size, so a package with a dozen
graphs exports in minutes on one core while the others idle. Here each graph is exported by
one of a pool of spawned workers (spawn, not fork: the parent may hold OpenMP and ONNX Runtime
threads). A worker rebuilds the model from its config and a memory-mapped copy of its weights
(one file whose pages all workers share), plans the same graphs and exports the ones it is
given. Its example outputs must equal the parent's exactly: a model that does not rebuild from
its config and weights is refused, never exported differently.

The pool lives for the process (an export session of a test suite or a script reuses warm
workers); `shutdown()` ends it and runs at exit. Must not import: rclpy, the runtime's
serving layers.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

WORKER_BASE_BYTES = 1 << 30  # a worker's own footprint (torch, the exporter) besides weights

_pool: ProcessPoolExecutor | None = None
_pool_jobs = 0


@dataclass(frozen=True)
class GraphJob:
    """One graph to export: which model (weights file + config), which graph, where."""

    weights: str
    config: dict
    rtc_vjp: bool
    seed: int
    name: str
    path: str
    verify: bool
    atol: float
    fp16_path: str | None


@dataclass(frozen=True)
class GraphDone:
    name: str
    seconds: float
    max_err: float  # |ONNX - torch| on the example inputs, nan when not verified
    example_outputs: dict[str, np.ndarray]  # the worker's, for the rebuild check


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    try:
        quota, period = Path('/sys/fs/cgroup/cpu.max').read_text().split()
        if quota != 'max':
            n = min(n, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n or 1)


def available_memory_bytes() -> int | None:
    try:
        for line in Path('/proc/meminfo').read_text().splitlines():
            if line.startswith('MemAvailable:'):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def auto_jobs(n_graphs: int, largest_graph_bytes: int) -> int:
    """As many workers as CPUs and graphs allow, fewer where memory would not hold them (each
    worker holds its graph's weights about twice while serializing, plus its own footprint)."""
    jobs = min(available_cpus(), n_graphs)
    mem = available_memory_bytes()
    if mem is not None:
        jobs = min(jobs, max(1, mem // (2 * largest_graph_bytes + WORKER_BASE_BYTES)))
    return max(1, jobs)


def _get_pool(jobs: int) -> ProcessPoolExecutor:
    global _pool, _pool_jobs
    if _pool is None or _pool_jobs != jobs:
        shutdown()
        import multiprocessing as mp

        _pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context('spawn'))
        _pool_jobs = jobs
    return _pool


def shutdown() -> None:
    """Ends the worker pool (it is started again on the next parallel export)."""
    global _pool, _pool_jobs
    if _pool is not None:
        _pool.shutdown(wait=True, cancel_futures=True)
        _pool, _pool_jobs = None, 0


atexit.register(shutdown)


def save_weights(model: torch.nn.Module, directory: Path) -> Path:
    path = directory / 'weights.pt'
    torch.save(model.state_dict(), path)
    return path


def export_in_pool(jobs: list[GraphJob], n_workers: int) -> Iterator[GraphDone]:
    """Runs the jobs on `n_workers` workers; yields each graph as it finishes (any order).
    A worker's error is raised here with its message; the pool is ended then, so no worker
    keeps writing into a directory the caller is about to report as failed."""
    pool = _get_pool(n_workers)
    futures: list[Future] = [pool.submit(_run, j) for j in jobs]
    try:
        for f in as_completed(futures):
            yield f.result()
    except BaseException:
        for f in futures:
            f.cancel()
        shutdown()
        raise


# --- in the worker ---------------------------------------------------------------------------

_cached: tuple[str, dict] | None = None  # (weights file, plans by name) of the last model


def _plans(job: GraphJob) -> dict:
    global _cached
    if _cached is None or _cached[0] != job.weights:
        from vla_ros.export.exporter import all_plans
        from vla_ros.model.config import VLAConfig
        from vla_ros.model.vla import VLA

        _cached = None
        model = VLA(VLAConfig.from_dict(job.config))
        state = torch.load(job.weights, mmap=True, weights_only=True)
        model.load_state_dict(state, strict=True, assign=True)
        plans = all_plans(model.eval(), job.rtc_vjp, job.seed)
        _cached = (job.weights, {p.name: p for p in plans})
    return _cached[1]


def _run(job: GraphJob) -> GraphDone:
    from vla_ros.export.exporter import _export_one, _to_fp16, _verify

    torch.set_num_threads(1)  # the pool already fills the CPUs, one graph per worker
    t0 = time.monotonic()
    plan = _plans(job)[job.name]
    path = Path(job.path)
    _export_one(plan, path)
    err = _verify(plan, path, job.atol) if job.verify else float('nan')
    if job.fp16_path:
        _to_fp16(path, Path(job.fp16_path))
    return GraphDone(job.name, time.monotonic() - t0, err,
                     {k: v.detach().numpy() for k, v in plan.example_outputs.items()})
