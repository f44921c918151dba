"""A package's graphs exported side by side in worker processes.

torch's dynamo exporter spends seconds of single-threaded Python per graph (tracing,
decompositions, the ONNX optimizer) whatever the graph's size, so a package with a dozen
graphs exports in minutes on one core while the others idle. Here each graph is exported by
one of a pool of worker interpreters (fresh processes, not forks: the parent may hold OpenMP
and ONNX Runtime threads). A worker rebuilds the model from its config and a memory-mapped
copy of its weights (one file whose pages all workers share), plans the same graphs and
exports the ones it is given. Its example outputs must equal the parent's (to rounding): a
model that does not rebuild from its config and weights is refused, never exported
differently.

The pool lives for the process (an export session of a test suite or a script reuses warm
workers); `shutdown()` ends it and runs at exit. Must not import: rclpy, the runtime's
serving layers.
"""

from __future__ import annotations

import atexit
import os
import pickle
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

WORKER_BASE_BYTES = 1 << 30  # a worker's own footprint (torch, the exporter) besides weights



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


def idle_cpus() -> int:
    """CPUs not already busy: the usable ones less the last minute's load average, counting
    this process's own CPU as free (it only waits while the workers export)."""
    n = available_cpus()
    try:
        busy = max(0, int(round(os.getloadavg()[0])) - 1)
    except OSError:
        busy = 0
    return max(1, min(n, n - busy))


def auto_jobs(n_graphs: int, largest_graph_bytes: int) -> int:
    """As many workers as idle CPUs and graphs allow (a worker on a busy CPU only adds its
    start-up), fewer where memory would not hold them (each worker holds its graph's weights
    about twice while serializing, plus its own footprint). One means: in this process."""
    jobs = min(idle_cpus(), n_graphs)
    mem = available_memory_bytes()
    if mem is not None:
        jobs = min(jobs, max(1, mem // (2 * largest_graph_bytes + WORKER_BASE_BYTES)))
    return max(1, jobs)


class _Worker:
    """One worker: `python -m vla_ros.export.parallel` fed jobs and answering results as
    length-prefixed pickles over its own two pipes (its stdout and stderr stay the
    exporter's, as in one process). A fresh interpreter, not a multiprocessing child: no
    fork of a parent holding threads, and a caller's script is never re-imported (which
    multiprocessing's spawn does to a `__main__` without a guard)."""

    def __init__(self) -> None:
        import subprocess
        import sys

        import vla_ros

        jobs_r, self._jobs_w = os.pipe()
        self._results_r, results_w = os.pipe()
        env = dict(os.environ)
        root = str(Path(vla_ros.__file__).resolve().parents[1])
        env['PYTHONPATH'] = os.pathsep.join(p for p in (root, env.get('PYTHONPATH')) if p)
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'vla_ros.export.parallel', str(jobs_r), str(results_w)],
            pass_fds=(jobs_r, results_w), env=env)
        os.close(jobs_r)
        os.close(results_w)
        self._out = os.fdopen(self._jobs_w, 'wb')
        self._in = os.fdopen(self._results_r, 'rb')

    def run(self, job: GraphJob) -> GraphDone:
        _send(self._out, job)
        try:
            ok, value = _receive(self._in)
        except EOFError:
            raise RuntimeError(f'export worker {self.proc.pid} ended (exit code '
                               f'{self.proc.wait()}) while exporting graph {job.name}') from None
        if not ok:
            raise value
        return value

    def close(self, timeout_s: float = 10.0) -> None:
        import subprocess

        for f in (self._out, self._in):
            try:
                f.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_workers: list[_Worker] = []


def _send(f, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(len(data).to_bytes(8, 'little'))
    f.write(data)
    f.flush()


def _receive(f):
    head = f.read(8)
    if len(head) < 8:
        raise EOFError
    data = f.read(int.from_bytes(head, 'little'))
    if len(data) < int.from_bytes(head, 'little'):
        raise EOFError
    return pickle.loads(data)


def shutdown() -> None:
    """Ends the workers (they are started again on the next parallel export)."""
    while _workers:
        _workers.pop().close()


atexit.register(shutdown)


def save_weights(model: torch.nn.Module, directory: Path) -> Path:
    path = directory / 'weights.pt'
    torch.save(model.state_dict(), path)
    return path


def export_in_pool(jobs: list[GraphJob], n_workers: int) -> Iterator[GraphDone]:
    """Runs the jobs on `n_workers` workers (kept warm for the next export); yields each
    graph as it finishes (any order). A worker's error is raised here with its message and
    the workers are ended, so none keeps writing into a directory reported as failed."""
    while len(_workers) > n_workers:
        _workers.pop().close()
    while len(_workers) < n_workers:
        _workers.append(_Worker())
    todo: queue.Queue = queue.Queue()
    for j in jobs:
        todo.put(j)
    results: queue.Queue = queue.Queue()
    stop = threading.Event()

    def feed(worker: _Worker) -> None:  # one thread per worker: hands it jobs one by one
        while not stop.is_set():
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results.put((True, worker.run(job)))
            except BaseException as e:  # handed to the caller's thread, raised there
                results.put((False, e))
                return

    threads = [threading.Thread(target=feed, args=(w,), name=f'export-worker-{i}',
                                daemon=True) for i, w in enumerate(_workers)]
    for t in threads:
        t.start()
    try:
        for _ in jobs:
            ok, value = results.get()
            if not ok:
                raise value
            yield value
    except BaseException:
        stop.set()
        for w in _workers:
            w.proc.kill()
        shutdown()
        raise
    finally:
        for t in threads:
            t.join(timeout=30)


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

    t0 = time.monotonic()
    plan = _plans(job)[job.name]
    path = Path(job.path)
    _export_one(plan, path)
    err = _verify(plan, path, job.atol) if job.verify else float('nan')
    if job.fp16_path:
        _to_fp16(path, Path(job.fp16_path))
    return GraphDone(job.name, time.monotonic() - t0, err,
                     {k: v.detach().numpy() for k, v in plan.example_outputs.items()})


def _serve(jobs_fd: int, results_fd: int) -> None:
    """The worker's loop: a job in, its GraphDone (or the exception it raised) out, until the
    parent closes the pipe."""
    torch.set_num_threads(1)  # the workers already fill the CPUs, one graph each
    with os.fdopen(jobs_fd, 'rb') as jobs, os.fdopen(results_fd, 'wb') as results:
        while True:
            try:
                job = _receive(jobs)
            except EOFError:
                return
            try:
                answer = (True, _run(job))
            except Exception as e:  # every failure goes back to the parent
                try:
                    pickle.dumps(e)
                except Exception:  # one that does not pickle
                    e = RuntimeError(f'{type(e).__name__}: {e}')
                answer = (False, e)
            _send(results, answer)


if __name__ == '__main__':
    import sys

    from vla_ros.export import parallel  # this module under its own name, for the pickles

    parallel._serve(int(sys.argv[1]), int(sys.argv[2]))
