"""Loading a model beside a running control loop: the load takes what the loop leaves.

A hot-swap loads, hashes and warms up a second package in a fresh inference process while
the first serves and the control loop ticks. Measured on 2 cores, that load (sha256 of the
files, ONNX Runtime's graph optimisation, the first inferences on every core) raised the
loop's missed ticks. While it loads, the new process therefore runs
  - on one CPU only (affinity: the last of the allowed ones, so every thread it starts,
    ONNX Runtime's pool included, shares that CPU), and
  - under SCHED_BATCH (it never preempts the loop on wake-up; the kernel treats it as
    CPU-bound), on top of the inference process's nice value,
and gets its CPUs and its normal policy back once it is ready, before it serves. SCHED_IDLE
was tried and dropped: on a loaded 2-core machine it starved the load (one swap of the
default model took 103 s instead of about 1 s) while the loop missed ticks at its background
rate all that time. Linux only; elsewhere it is a no-op. Imports the standard library only.
"""

from __future__ import annotations

import os


class BackgroundLoad:
    """`enter()` before loading, `leave()` once warmed up; `state` says what was applied."""

    def __init__(self) -> None:
        self._cpus: set[int] | None = None
        self._policy: int | None = None
        self.state = 'not applied'

    def enter(self) -> None:
        if not hasattr(os, 'sched_setaffinity'):
            self.state = 'not supported here'
            return
        applied = []
        try:
            self._cpus = os.sched_getaffinity(0)
            if len(self._cpus) > 1:
                os.sched_setaffinity(0, {max(self._cpus)})
                applied.append(f'cpu {max(self._cpus)} of {len(self._cpus)}')
        except OSError:
            self._cpus = None
        try:
            self._policy = os.sched_getscheduler(0)
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
            applied.append('SCHED_BATCH')
        except OSError:
            self._policy = None
        self.state = ', '.join(applied) or 'nothing applicable'

    def leave(self) -> None:
        """Back to the normal policy and every allowed CPU. Threads started while loading
        keep the one-CPU affinity they inherited only if they set their own; ONNX Runtime's
        pool threads take the process mask at creation, so they are widened here too."""
        if self._policy is not None:
            try:
                os.sched_setscheduler(0, self._policy, os.sched_param(0))
            except OSError as e:
                self.state += f'; policy not restored ({e})'
        if self._cpus is not None:
            for tid in _threads():
                try:
                    os.sched_setaffinity(tid, self._cpus)
                    if self._policy is not None:
                        os.sched_setscheduler(tid, self._policy, os.sched_param(0))
                except OSError:
                    pass  # a thread that ended meanwhile


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir('/proc/self/task')]
    except OSError:
        return [0]
