"""The inference worker: a thread that turns observations into chunks in the action queue.

Threads: the worker thread owns the Policy and its backend (thread-confined); the control loop
only reads the ActionQueue (thread-safe). The worker asks the RequestPolicy when to infer,
takes an observation snapshot from `observe()` (None = not ready: stale or missing inputs),
runs the policy, merges the chunk, and reports every outcome through callbacks. A model swap is
handed in with `swap()` and applied between two inferences (a chunk boundary): the queue keeps
executing the old model's chunk meanwhile. No exception escapes the thread: a failed
inference is reported as a fault (the safety filter holds when the queue runs dry) and the
loop goes on. A policy in a child process that has died is restarted with exponential
back-off (reported as a fault before each attempt); the arm holds meanwhile. Imports no ROS.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vla_ros.runtime.chunking.action_queue import ActionQueue, MergeReport
from vla_ros.runtime.chunking.chunk import ActionChunk
from vla_ros.runtime.chunking.scheduling import LatencyEstimator, RequestPolicy
from vla_ros.runtime.policy.guidance import Guidance
from vla_ros.runtime.policy.policy import Observation, Policy  # or a PolicyProcess

log = logging.getLogger('vla_ros.worker')


@dataclass
class WorkerStats:
    inferences: int = 0
    failures: int = 0
    skipped: int = 0  # no observation ready when due
    last_error: str = ''
    last_exit_layer: int | None = None
    model_name: str = ''
    swaps: int = 0
    restarts: int = 0  # inference processes restarted after dying
    restart_state: str = ''  # '' while serving; what the restart is doing otherwise
    exit_counts: dict[int, int] = field(default_factory=dict)  # exit layer -> chunks


class InferenceWorker:
    def __init__(self, policy: Policy, queue: ActionQueue, clock: Callable[[], float],
                 observe: Callable[[], Observation | None], *,
                 request: RequestPolicy | None = None,
                 on_chunk: Callable[[ActionChunk, MergeReport], None] | None = None,
                 on_fault: Callable[[str], None] | None = None,
                 deadline_ms: float | None = None, rtc_prefix: bool = False,
                 idle_sleep_s: float = 0.005, retry_sleep_s: float = 0.02,
                 failure_backoff_s: float = 0.5, added_latency_s: float = 0.0,
                 restart_backoff_s: float = 1.0, max_restart_backoff_s: float = 30.0) -> None:
        self.policy = policy
        self.queue = queue
        self.clock = clock  # control clock, seconds (the node's clock)
        self.observe = observe
        self.request = request or RequestPolicy()
        self.on_chunk = on_chunk or (lambda c, r: None)
        self.on_fault = on_fault or (lambda msg: None)
        self.deadline_ms = deadline_ms
        self.rtc_prefix = rtc_prefix
        self.idle_sleep_s = idle_sleep_s
        self.retry_sleep_s = retry_sleep_s
        self.failure_backoff_s = failure_backoff_s
        self.restart_backoff_s = restart_backoff_s  # doubled per failed attempt, up to max
        self.max_restart_backoff_s = max_restart_backoff_s
        self._restart_attempts = 0  # since the last successful inference
        # Extra delay before a chunk is queued, as a slower computer would add (evaluation:
        # how the queue's latency handling copes); the chunk keeps its observation stamp.
        self.added_latency_s = added_latency_s
        self.latency = LatencyEstimator()
        self.stats = WorkerStats(model_name=policy.m.name)
        self.latencies_ms: deque[float] = deque(maxlen=200)
        self.infer_times: deque[float] = deque(maxlen=50)
        self._pending: tuple[Policy, Callable[[Policy], None] | None] | None = None
        self._config = None  # a PolicyConfig waiting to be applied
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_request: float | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name='vla_inference', daemon=False)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Signals the loop and joins it; True if it ended within the timeout."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        alive = self._thread.is_alive()
        if not alive:
            self._thread = None
        return not alive

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def swap(self, policy: Policy, on_swapped: Callable[[Policy], None] | None = None) -> None:
        """Hands over a loaded, warmed-up policy; applied before the next inference."""
        with self._lock:
            self._pending = (policy, on_swapped)

    def reconfigure(self, config) -> None:
        """A new PolicyConfig (validated by the caller); applied before the next inference,
        since the policy belongs to this thread."""
        with self._lock:
            self._config = config

    def inference_hz(self) -> float:
        t = list(self.infer_times)
        if len(t) < 2 or t[-1] <= t[0]:
            return 0.0
        return (len(t) - 1) / (t[-1] - t[0])

    # --- the loop ----------------------------------------------------------------------------

    def _apply_swap(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
            config, self._config = self._config, None
        if config is not None:
            try:
                self.policy.set_config(config)
            except (ValueError, KeyError) as e:
                log.error('policy settings not applied: %s', e)
        if pending is None:
            return
        new, callback = pending
        old = self.policy
        self.policy = new
        self.stats.model_name = new.m.name
        self.stats.swaps += 1
        self.latency = LatencyEstimator()  # the new model has its own latency
        log.info('swapped model %s -> %s at a chunk boundary', old.m.name, new.m.name)
        if callback:
            callback(old)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._apply_swap()
            if getattr(self.policy, 'alive', True) is False and hasattr(self.policy, 'restart'):
                # Seen within one idle period of the death, not at the next inference.
                self.stats.failures += 1
                self.stats.last_error = 'the inference process has ended'
                self._restart(self.policy)
                continue
            now = self.clock()
            m = self.policy.m
            span = m.action.dt_s * (m.action.chunk_len - 1)
            if not self.request.should_request(now, self.queue.remaining_s(now),
                                               self.latency.estimate_s(), span,
                                               self._last_request):
                self._stop.wait(self.idle_sleep_s)
                continue
            obs = self.observe()
            if obs is None:
                # Inputs not ready: retry at the pace of camera frames, not in a busy loop
                # that would take the GIL from the control loop.
                self.stats.skipped += 1
                self._stop.wait(self.retry_sleep_s)
                continue
            self._last_request = now
            self._infer(obs)

    def _infer(self, obs: Observation) -> None:
        policy = self.policy
        m = policy.m
        prefix = None
        method = self.queue.strategy.guidance  # rtc_inpaint / rtc_guided ask for a prefix
        if (self.rtc_prefix or method) and m.flow is not None:
            g = self.queue.guidance_prefix(obs.stamp_s, m.action.dt_s, m.action.chunk_len)
            if g is not None:
                prefix = self._prefix_weights(g, m, method or 'inpaint')
        deadline = (time.monotonic() + self.deadline_ms / 1000.0
                    if self.deadline_ms is not None else None)
        try:
            chunk = policy.infer(obs, deadline_s=deadline, prefix=prefix)
            if self.added_latency_s > 0:
                self._stop.wait(self.added_latency_s)
            report = self.queue.add_chunk(chunk, now=self.clock())
        except Exception as e:
            # Backends raise their own exception types (ONNX Runtime's derive from Exception
            # only). Whatever failed, the handling is the same and complete: report, count,
            # go on; the safety filter holds once the queue runs dry.
            self.stats.failures += 1
            self.stats.last_error = f'{type(e).__name__}: {e}'
            log.error('inference failed: %s', self.stats.last_error)
            self.on_fault(self.stats.last_error)
            if getattr(policy, 'alive', True) is False and hasattr(policy, 'restart'):
                self._restart(policy)
            else:
                self._stop.wait(self.failure_backoff_s)  # a broken backend fails fast
            return
        self._restart_attempts = 0
        self.stats.restart_state = ''
        if not report.stale:
            self.latency.add(report.latency_s)
        self.latencies_ms.append(report.latency_s * 1000.0)
        self.infer_times.append(time.monotonic())
        self.stats.inferences += 1
        self.stats.last_exit_layer = chunk.exit_layer
        counts = self.stats.exit_counts
        counts[chunk.exit_layer] = counts.get(chunk.exit_layer, 0) + 1
        self.on_chunk(chunk, report)

    def _restart(self, policy) -> None:
        """The child process died: wait out the back-off, then start a fresh one. A failed
        start is reported; the next inference fails at once and comes back here with a
        longer wait."""
        self._restart_attempts += 1
        n = self._restart_attempts
        wait = min(self.restart_backoff_s * 2 ** (n - 1), self.max_restart_backoff_s)
        self.stats.restart_state = (f'ended (exit code {getattr(policy, "exitcode", None)}); '
                                    f'restart {n} in {wait:.1f} s')
        log.error('inference process %s', self.stats.restart_state)
        self.on_fault(f'inference process {self.stats.restart_state}')
        if self._stop.wait(wait):
            return
        self.stats.restart_state = f'restarting (attempt {n})'
        try:
            policy.restart()
        except Exception as e:  # BackendError from loading, OSError from spawning
            self.stats.restart_state = f'restart {n} failed: {type(e).__name__}: {e}'
            log.error('inference process %s', self.stats.restart_state)
            self.on_fault(f'inference process {self.stats.restart_state}')
            return
        self.stats.restarts += 1
        self.stats.restart_state = f'restarted (attempt {n}); waiting for its first chunk'
        log.warning('inference process restarted after %d attempt(s): %s', n,
                    policy.describe())

    def _prefix_weights(self, guidance, m, method: str) -> Guidance:
        from vla_ros.runtime.chunking.merge import rtc_prefix_weights

        prefix, covered = guidance
        d = self.latency.delay_steps(m.action.dt_s)
        w = rtc_prefix_weights(np.arange(m.action.chunk_len), d, m.action.chunk_len,
                               max(m.action.chunk_len // 2, d))
        return Guidance(prefix, np.where(covered, w, 0.0), method, d)
