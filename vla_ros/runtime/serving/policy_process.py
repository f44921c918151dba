"""A Policy in its own process, behind the same interface (infer, set_config, m, exits).

Why: measured on 2 cores, a 100 Hz rclpy control timer in the same process as inference ran
at about half rate (tick period error p50 9.6 ms, p99 26 ms) because preprocessing and the
Python glue between graphs hold the GIL. In a child process the inference work no longer
competes for the node's GIL, and the child runs at a lower CPU priority (nice), so the control
loop gets a core when it needs one.

The child is started with the 'spawn' method (a fresh interpreter: no forked ROS or thread
state), loads and warms up the package, then serves requests over a pipe. Camera frames go
through shared memory (frame_ring.py: written once by the parent, preprocessed in place by
the child, never pickled); the observation's small fields (encodings, state, instruction,
stamp) and the frame id go over the pipe, chunks come back. A frame the ring cannot hold (an
unusual dtype or layout) goes over the pipe as before. Each hot-swapped model gets its own
process; the old one is closed after the swap. A child that dies or stops answering is
reported as a BackendError (the worker then reports a fault and the safety filter holds) and
`restart()` starts a fresh child of the same package (the worker does, with back-off). The
deadline is an absolute time on CLOCK_MONOTONIC, which both processes share.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import signal
import time
from dataclasses import dataclass

from vla_ros.runtime.backends.base import BackendError
from vla_ros.runtime.chunking.chunk import ActionChunk
from vla_ros.runtime.package.loader import read_manifest
from vla_ros.runtime.policy.policy import Observation, PolicyConfig
from vla_ros.runtime.serving.background import BackgroundLoad
from vla_ros.runtime.serving.frame_ring import FrameReader, FrameRing, FrameRingError


@dataclass(frozen=True)
class BackendSpec:
    kind: str = 'onnxruntime'
    device: str = 'cpu'
    precision: str = 'fp32'
    threads: int | None = None


def _serve(conn, package_dir: str, backend: BackendSpec, config: PolicyConfig, nice: int,
           warmup: int, background: bool = False) -> None:
    """Child process: load, warm up, then answer requests until 'close' or EOF."""
    import numpy as np

    from vla_ros.runtime.backends import load_backend
    from vla_ros.runtime.package.loader import load_package
    from vla_ros.runtime.policy.policy import Policy

    # A terminal's Ctrl-C reaches the whole process group: the parent shuts this process
    # down in order (the arm is brought to rest first), so the child does not act on it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if nice:
        os.nice(nice)
    bg = BackgroundLoad()
    if background:  # a hot-swap: the control loop ticks beside this load
        bg.enter()
    try:
        pkg = load_package(package_dir)
        options = {'threads': backend.threads} if backend.kind == 'onnxruntime' else {}
        be = load_backend(pkg, backend.kind, backend.device, backend.precision, **options)
        policy = Policy(pkg, be, config)
        m = pkg.manifest
        warm = Observation({c.name: (np.zeros((c.height, c.width, 3), np.uint8), 'rgb8')
                            for c in m.cameras}, np.zeros(m.state.dim), 'warm up', 0.0)
        for _ in range(warmup):
            policy.infer(warm)
    except Exception as e:  # every load failure goes back to the parent as its message
        conn.send(('error', f'{type(e).__name__}: {e}'))
        conn.close()
        return
    bg.leave()
    conn.send(('ready', be.describe() + (f' (loaded with {bg.state})' if background else '')))
    reader: FrameReader | None = None
    while True:
        try:
            op, payload = conn.recv()
        except (EOFError, OSError):
            break
        if op == 'close':
            break
        try:
            if op == 'infer':
                obs, deadline_s, prefix = payload
                conn.send(('ok', policy.infer(obs, deadline_s, prefix)))
            elif op == 'prepare':  # the overhead bench, frames pickled
                t0, c0 = time.perf_counter(), time.thread_time()
                policy.prepare(payload)
                conn.send(('ok', ((time.perf_counter() - t0) * 1e3,
                                  (time.thread_time() - c0) * 1e3)))
            elif op in ('infer_shared', 'prepare_shared'):
                light, deadline_s, prefix = payload
                conn.send(('ok', _shared(reader, policy, op, light, deadline_s, prefix)))
            elif op == 'ring':
                if reader is not None:
                    reader.close()
                reader = None
                reader = FrameReader(payload)
                conn.send(('ok', None))
            elif op == 'config':
                policy.set_config(payload)
                conn.send(('ok', None))
        except Exception as e:  # reported to the parent, which holds and goes on
            conn.send(('error', f'{type(e).__name__}: {e}'))
    if reader is not None:
        reader.close()
    be.close()


def _shared(reader: FrameReader | None, policy, op: str, light: tuple, deadline_s, prefix):
    """Child: an observation whose frames are in the ring, used in place. The slot is
    checked after its last use, so a frame overwritten meanwhile fails (TornFrame) instead
    of giving a chunk from a mixed frame. 'prepare_shared' stops at the model's inputs and
    how long that took, wall and CPU ms (the overhead bench)."""
    if reader is None:
        raise FrameRingError('no frame ring attached')
    frame_id, encodings, state, instruction, stamp_s, extras = light
    t0, c0 = time.perf_counter(), time.thread_time()
    views, _stamp, seq = reader.view(frame_id)
    obs = Observation({n: (views[n], enc) for n, enc in encodings.items() if n in views},
                      state, instruction, stamp_s, extras)
    try:
        if op == 'prepare_shared':
            policy.prepare(obs)
            result = ((time.perf_counter() - t0) * 1e3, (time.thread_time() - c0) * 1e3)
        else:
            result = policy.infer(obs, deadline_s, prefix)
    finally:
        del obs, views
    reader.check(frame_id, seq)
    return result


class PolicyProcess:
    """The parent's handle. Not thread-safe: one thread (the worker) talks to it, apart from
    construction (a loader thread) and close()."""

    def __init__(self, package_dir: str, backend: BackendSpec = BackendSpec(),
                 config: PolicyConfig | None = None, *, nice: int = 5, warmup: int = 2,
                 start_timeout_s: float = 300.0, infer_timeout_s: float = 60.0,
                 shared_frames: bool = True, background_load: bool = False) -> None:
        self.m = read_manifest(package_dir)
        self.shared_frames = shared_frames
        self._ring: FrameRing | None = None  # made for the first frames, in _send_frames
        self.package_dir = str(package_dir)
        self.config = config or PolicyConfig()
        self.infer_timeout_s = infer_timeout_s
        self._start_args = (backend, nice, warmup, start_timeout_s)
        self.restarts = 0
        # Loaded beside a running control loop (hot-swap): one CPU, idle priority until ready
        # (background.py). A restart after a crash loads at full speed: the arm holds then.
        self._start(background_load)
        self.exits = tuple(self.m.exits.layers)

    def _start(self, background: bool = False) -> None:
        backend, nice, warmup, start_timeout_s = self._start_args
        ctx = mp.get_context('spawn')
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, name=f'vla_policy:{self.m.name}',
                                 args=(child, self.package_dir, backend, self.config, nice,
                                       warmup, background), daemon=True)
        self._proc.start()
        child.close()
        kind, detail = self._receive(start_timeout_s, 'load')
        if kind != 'ready':
            self._proc.join(5)
            raise BackendError(f'loading {self.package_dir} failed: {detail}')
        self._describe = detail

    def restart(self) -> None:
        """A fresh child for the same package and settings (the old one is ended first).
        Blocks while it loads and warms up; BackendError if that fails."""
        self.close()
        self._start()
        self.restarts += 1

    @property
    def exitcode(self) -> int | None:
        return self._proc.exitcode

    def _receive(self, timeout_s: float, what: str):
        if not self._conn.poll(timeout_s):
            self.close()
            raise BackendError(f'the inference process did not answer {what} within '
                               f'{timeout_s:g} s')
        try:
            return self._conn.recv()
        except (EOFError, OSError) as e:
            raise BackendError(f'the inference process ended during {what} (exit code '
                               f'{self._proc.exitcode})') from e

    def infer(self, obs: Observation, deadline_s: float | None = None,
              prefix=None) -> ActionChunk:
        if not self._proc.is_alive():
            raise BackendError(f'the inference process has ended (exit code '
                               f'{self._proc.exitcode})')
        light = self._send_frames(obs)
        if light is None:
            self._conn.send(('infer', (obs, deadline_s, prefix)))
        else:
            self._conn.send(('infer_shared', (light, deadline_s, prefix)))
        kind, value = self._receive(self.infer_timeout_s, 'an inference')
        if kind != 'ok':
            raise BackendError(value)
        return value

    def prepare_ms(self, obs: Observation) -> tuple[float, float, float]:
        """Sends `obs` as infer() would, but the child stops at the model's inputs (the
        overhead bench). Returns (ms to write the frames here, the child's wall ms and CPU ms
        from the request's arrival to the inputs)."""
        t0 = time.perf_counter()
        light = self._send_frames(obs)
        write_ms = (time.perf_counter() - t0) * 1e3
        if light is None:
            self._conn.send(('prepare', obs))
        else:
            self._conn.send(('prepare_shared', (light, None, None)))
        kind, value = self._receive(self.infer_timeout_s, 'a preparation')
        if kind != 'ok':
            raise BackendError(value)
        return (write_ms, *value)

    def _send_frames(self, obs: Observation) -> tuple | None:
        """Writes the frames into the ring (made, or remade larger, as needed: the child is
        told first); returns the small fields that go over the pipe, or None when the frames
        go over the pipe themselves."""
        if not self.shared_frames or not obs.images:
            return None
        frames = {n: img for n, (img, _enc) in obs.images.items()}
        if self._ring is None or not self._ring.fits(frames):
            try:
                ring = FrameRing.for_frames(frames, slots=2)
            except ValueError:
                return None
            if not ring.fits(frames):  # a dtype or layout the ring does not carry
                ring.close()
                return None
            self._conn.send(('ring', ring.spec))
            kind, value = self._receive(self.infer_timeout_s, 'attaching the frame ring')
            if kind != 'ok':
                ring.close()
                raise BackendError(f'the inference process could not attach shared frames: '
                                   f'{value}')
            if self._ring is not None:
                self._ring.close()
            self._ring = ring
        fid = self._ring.write(frames, obs.stamp_s)
        encodings = {n: enc for n, (_img, enc) in obs.images.items()}
        return (fid, encodings, obs.state, obs.instruction, obs.stamp_s, obs.extras)

    def set_config(self, config: PolicyConfig) -> None:
        self._conn.send(('config', config))
        kind, value = self._receive(self.infer_timeout_s, 'a settings change')
        if kind != 'ok':
            raise ValueError(value)
        self.config = config

    def describe(self) -> str:
        return f'{self._describe} in process {self._proc.pid}'

    @property
    def alive(self) -> bool:
        return self._proc.is_alive()

    def ended(self) -> bool:
        """True once the child has exited. Safe from any thread (a non-blocking wait on the
        process sentinel; it reaps nothing): the control loop asks on every tick."""
        return bool(mp_connection.wait([self._proc.sentinel], 0))

    def close(self, timeout_s: float = 5.0) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(('close', None))
            except (OSError, BrokenPipeError):
                pass
            self._proc.join(timeout_s)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(timeout_s)
        self._conn.close()
        if self._ring is not None:
            self._ring.close()  # unlinks the segment; a restart makes a fresh one
            self._ring = None

