"""The node's end of the control process (control_process.py): starts it, talks to it over
its pipe, watches it, and stops it.

One thread of the node (`vla_control_link`) owns the receiving end: it sends the node's
inputs every FEED_PERIOD_S (also the heartbeat the process holds without), hands each report
to `on_report`, answers waiting requests, and notices the end of the process (its pipe's end
of file or its exit), or a process that stopped reporting for STALL_S (killed then, so that
it can never resume on a stale plan): `on_ended` gets the reason. Any thread may send (one
lock). The process is started with 'spawn' (a fresh interpreter: no forked ROS or thread
state). Imports no rclpy itself.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import threading
import time
from collections.abc import Callable

from vla_ros.ros.node.control_process import serve
from vla_ros.ros.node.control_wire import (
    FEED_PERIOD_S,
    REST_TIMEOUT_S,
    ControlSpec,
    send_if_room,
)

START_TIMEOUT_S = 60.0  # a fresh interpreter importing rclpy and numpy on a loaded machine
REQUEST_TIMEOUT_S = 6.0  # above control_process.ENGAGE_WAIT_S
STALL_S = 2.0  # no report for this long (200 ticks at 100 Hz): the process is hung


class ControlProcessError(RuntimeError):
    """The control process could not start; the message says why."""


class ControlLink:
    def __init__(self, spec: ControlSpec, inputs: Callable[[], dict | None],
                 on_report: Callable[[dict], None], on_ended: Callable[[str], None]) -> None:
        self.spec = spec
        self._inputs, self._on_report, self._on_ended = inputs, on_report, on_ended
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ids = itertools.count()
        self._replies: dict[int, tuple] = {}
        self._reply_ready = threading.Condition()
        self.ended = ''  # why the process ended unasked ('' while it runs or was stopped)
        self.pid: int | None = None
        ctx = mp.get_context('spawn')
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=serve, args=(child, spec), name='vla_control',
                                 daemon=True)
        self._proc.start()
        child.close()
        if not self._conn.poll(START_TIMEOUT_S):
            self._kill()
            raise ControlProcessError(f'the control process did not start within '
                                      f'{START_TIMEOUT_S:g} s')
        try:
            kind, detail = self._conn.recv()
        except (EOFError, OSError) as e:
            self._kill()
            raise ControlProcessError(f'the control process ended while starting (exit code '
                                      f'{self._proc.exitcode})') from e
        if kind != 'ready':
            self._kill()
            raise ControlProcessError(f'the control process failed to start: {detail}')
        self.pid = detail
        self._last_report = time.monotonic()
        self._thread = threading.Thread(target=self._run, name='vla_control_link',
                                        daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._proc.is_alive() and not self.ended

    def send(self, *msg) -> bool:
        with self._lock:
            try:
                return send_if_room(self._conn, msg)
            except (OSError, ValueError):  # the process is gone; the link thread says so
                return False

    def request(self, op: str, timeout_s: float = REQUEST_TIMEOUT_S) -> tuple[bool, str]:
        """Sends `op` and waits for the process's answer: (ok, message)."""
        rid = next(self._ids)
        if not self.send(op, rid):
            return False, f'the control process is not running ({self.ended or "gone"})'
        end = time.monotonic() + timeout_s
        with self._reply_ready:
            while rid not in self._replies:
                left = end - time.monotonic()
                if left <= 0 or self.ended:
                    return False, (f'the control process did not answer {op} within '
                                   f'{timeout_s:g} s' if not self.ended else self.ended)
                self._reply_ready.wait(min(left, 0.05))
            return self._replies.pop(rid)

    def stop(self, timeout_s: float = REST_TIMEOUT_S + 2.0) -> bool:
        """Asks the process to bring the arm to rest and exit; ends it by force after
        `timeout_s`. True if it exited by itself."""
        self._stop.set()
        self.send('stop')
        self._proc.join(timeout_s)
        clean = not self._proc.is_alive()
        if not clean:
            self._kill()
        self._thread.join(timeout=2.0)
        self._conn.close()
        return clean

    def _kill(self) -> None:
        """SIGKILL: the process ignores SIGTERM (it is stopped in order, or not at all)."""
        self._proc.kill()
        self._proc.join(2.0)

    def _run(self) -> None:
        next_feed = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_feed:
                inputs = self._inputs()
                if inputs is not None:
                    self.send('inputs', inputs)
                next_feed = now + FEED_PERIOD_S
            try:
                if self._conn.poll(max(0.0, next_feed - time.monotonic())):
                    self._dispatch(self._conn.recv())
            except (EOFError, OSError):
                if not self._stop.is_set():
                    self._proc.join(1.0)
                    self._end(f'the control process ended (exit code {self._proc.exitcode})')
                return
            if not self._proc.is_alive() and not self._stop.is_set():
                self._end(f'the control process ended (exit code {self._proc.exitcode})')
                return
            if time.monotonic() - self._last_report > STALL_S and not self._stop.is_set():
                self._kill()
                self._end(f'the control process stopped reporting for {STALL_S:g} s and '
                          'was killed')
                return

    def _dispatch(self, msg: tuple) -> None:
        if msg[0] == 'report':
            self._last_report = time.monotonic()
            self._on_report(msg[1])
        elif msg[0] == 'reply':
            with self._reply_ready:
                self._replies[msg[1]] = (bool(msg[2]), str(msg[3]))
                self._reply_ready.notify_all()

    def _end(self, reason: str) -> None:
        self.ended = reason
        with self._reply_ready:
            self._reply_ready.notify_all()
        self._on_ended(reason)
