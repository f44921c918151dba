"""Camera frames between processes through shared memory: a ring of preallocated slots.

Why: pickling three 640x480 frames over a pipe took 5.0 ms per inference on 2 cores (a
shared-memory copy of the same bytes takes 0.08 ms). Here the writer (the node's worker) copies
each frame once into a slot of a POSIX shared-memory segment and the reader (the inference
process) preprocesses straight from a view of the slot, zero-copy; only the frame id and the
small fields of the observation travel over the pipe.

Layout: a header of int64 words (magic, slot count, cameras, writer and reader pid, the
newest frame id), then per slot a header (sequence, frame id, stamp as float64 seconds, and
per camera its shape and dtype), then the slots' pixel areas, each camera's area 64-byte
aligned and of a fixed capacity chosen at creation.

Seqlock: the writer makes the slot's sequence odd, writes the frame and its header, then makes
it even again. A reader takes the sequence before reading (odd: a write is under way), reads,
and compares it after: any change means the slot was overwritten meanwhile and the read is
discarded (`TornFrameError`), so a mixed frame can never be returned. A view handed out by `view()`
is checked the same way by `check()` once the caller is done with it. On x86-64 stores become
visible in program order (TSO); on aarch64 the pipe message that announces a frame orders it
(the kernel's pipe locks are barriers), which is how the inference process is fed.

A frame id is read as new once only: the reader remembers the newest id it consumed and
refuses an older or equal one (`StaleFrameError`). A writer or reader that has died is seen from
its pid in the header (`PeerGoneError`), so a wait never hangs. The writer owns the segment and
unlinks it on close; if the writer's process is killed, multiprocessing's resource tracker
unlinks it when the last process using the tracker ends. Readers attach without registering
with a tracker (a reader's exit must not unlink the writer's segment).
Imports numpy and the standard library only.
"""

from __future__ import annotations

import mmap
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

try:
    import _posixshmem  # what multiprocessing.shared_memory uses on POSIX
except ImportError:  # pragma: no cover - Windows
    _posixshmem = None

MAGIC = 0x56_4C_41_52_49_4E_47_31  # 'VLARING1'
DTYPES = ('uint8', 'uint16', 'float32')
ALIGN = 64
_HEAD_WORDS = 8  # magic, slots, cameras, writer pid, reader pid, newest id, 2 spare
_SLOT_WORDS = 3  # sequence, frame id, stamp (float64 seconds)
_CAM_WORDS = 4  # height, width, channels, dtype index
_NEWEST = 5


class FrameRingError(RuntimeError):
    """Base of the ring's errors."""


class TornFrameError(FrameRingError):
    """The slot was overwritten while it was read: the read is void."""


class StaleFrameError(FrameRingError):
    """The frame asked for is not new: it was read already, or overwritten by a newer one."""


class PeerGoneError(FrameRingError):
    """The process on the other side of the ring has ended."""


@dataclass(frozen=True)
class RingSpec:
    """What a reader needs to attach (picklable, small)."""
    name: str
    cameras: tuple[str, ...]
    capacity_bytes: tuple[int, ...]  # per camera
    slots: int

    def slot_words(self) -> int:
        return _SLOT_WORDS + _CAM_WORDS * len(self.cameras)

    def offsets(self) -> tuple[int, list[list[int]], int]:
        """(byte offset of the slot headers, [slot][camera] pixel offsets, total bytes)."""
        head = _HEAD_WORDS * 8
        pix = _align(head + self.slots * self.slot_words() * 8)
        per_slot = sum(_align(c) for c in self.capacity_bytes)
        offs = []
        for s in range(self.slots):
            o, row = pix + s * per_slot, []
            for c in self.capacity_bytes:
                row.append(o)
                o += _align(c)
            offs.append(row)
        return head, offs, pix + self.slots * per_slot


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, ended but not yet reaped, counts as ended)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f'/proc/{pid}/stat', 'rb') as f:
            return f.read().rsplit(b')', 1)[1].split()[0] != b'Z'
    except (OSError, IndexError):
        return True  # no /proc: kill(0) said it exists


class _Mapped:
    """Typed views on the segment (shared by the writer and the reader)."""

    def __init__(self, spec: RingSpec, buf) -> None:
        self.spec = spec
        head, self.pixel_offsets, total = spec.offsets()
        if len(buf) < total:
            raise FrameRingError(f'shared memory {spec.name} has {len(buf)} bytes, the ring '
                                 f'needs {total}')
        self.buf = buf
        self.head = np.ndarray((_HEAD_WORDS,), np.int64, buf, 0)
        self.slots = np.ndarray((spec.slots, spec.slot_words()), np.int64, buf, head)
        self.stamps = np.ndarray((spec.slots, spec.slot_words()), np.float64, buf, head)[:, 2]

    def release(self) -> None:
        self.head = self.slots = self.stamps = None  # views must go before the buffer can close


class FrameRing:
    """The writer's side; creates and owns the segment. One writer thread at a time."""

    def __init__(self, cameras: Sequence[str], capacity_bytes: Sequence[int],
                 slots: int = 3, name: str | None = None) -> None:
        if slots < 2:
            raise ValueError(f'slots {slots} must be >= 2 (one being read, one written)')
        if len(cameras) != len(capacity_bytes) or not cameras:
            raise ValueError(f'cameras {list(cameras)} and capacity_bytes '
                             f'{list(capacity_bytes)} must be non-empty and of equal length')
        self.spec = RingSpec(name or f'vla_ring_{os.getpid()}_{secrets.token_hex(4)}',
                             tuple(cameras), tuple(int(c) for c in capacity_bytes), slots)
        total = self.spec.offsets()[2]
        self._shm = shared_memory.SharedMemory(self.spec.name, create=True, size=total)
        self._map = _Mapped(self.spec, self._shm.buf)
        self._map.slots[:] = 0
        h = self._map.head
        h[:] = 0
        h[1], h[2], h[3], h[4], h[_NEWEST] = slots, len(cameras), os.getpid(), 0, 0
        h[0] = MAGIC
        self._index = {c: i for i, c in enumerate(cameras)}
        self._next_id = 1
        self.closed = False

    @classmethod
    def for_frames(cls, frames: Mapping[str, np.ndarray], slots: int = 3,
                   min_bytes: int = 640 * 480 * 3) -> FrameRing:
        """A ring whose slots hold frames like these (at least `min_bytes` per camera)."""
        names = list(frames)
        return cls(names, [max(frames[n].nbytes, min_bytes) for n in names], slots)

    def fits(self, frames: Mapping[str, np.ndarray]) -> bool:
        return all(n in self._index and a.nbytes <= self.spec.capacity_bytes[self._index[n]]
                   and str(a.dtype) in DTYPES and a.ndim in (2, 3) for n, a in frames.items())

    def write(self, frames: Mapping[str, np.ndarray], stamp_s: float = 0.0) -> int:
        """Copies the frames into the next slot; returns its frame id (1, 2, ...). Cameras
        not given are marked absent in that slot."""
        if self.closed:
            raise FrameRingError('the ring is closed')
        if not self.fits(frames):
            room = dict(zip(self.spec.cameras, self.spec.capacity_bytes, strict=True))
            raise ValueError(f'frames {_shapes(frames)} do not fit the ring ({room} bytes, '
                             f'dtypes {DTYPES})')
        fid = self._next_id
        s = fid % self.spec.slots
        row = self._map.slots[s]
        row[0] += 1  # odd: being written
        for name, i in self._index.items():
            meta = row[_SLOT_WORDS + _CAM_WORDS * i: _SLOT_WORDS + _CAM_WORDS * (i + 1)]
            a = frames.get(name)
            if a is None:
                meta[:] = (0, 0, 0, -1)
                continue
            h, w = a.shape[:2]
            c = a.shape[2] if a.ndim == 3 else 0
            dst = np.ndarray(a.shape, a.dtype, self._map.buf, self._map.pixel_offsets[s][i])
            np.copyto(dst, a, casting='no')
            meta[:] = (h, w, c, DTYPES.index(str(a.dtype)))
        row[1] = fid
        self._map.stamps[s] = stamp_s
        row[0] += 1  # even: complete
        self._map.head[_NEWEST] = fid
        self._next_id = fid + 1
        return fid

    def reader_alive(self) -> bool:
        """False once a reader has attached and its process has ended."""
        pid = int(self._map.head[4])
        return pid == 0 or pid_alive(pid)

    @property
    def reader_pid(self) -> int:
        return int(self._map.head[4])

    def close(self) -> None:
        """Unlinks the segment (readers still attached keep their mapping until they close)."""
        if self.closed:
            return
        self.closed = True
        self._map.release()
        self._shm.close()
        try:
            self._shm.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> FrameRing:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FrameReader:
    """The reader's side (another process, or a test thread). One reader per ring."""

    def __init__(self, spec: RingSpec, *, claim: bool = True) -> None:
        if _posixshmem is None:  # pragma: no cover
            raise FrameRingError('shared-memory frames need a POSIX system')
        try:
            fd = _posixshmem.shm_open('/' + spec.name, os.O_RDWR, mode=0o600)
        except FileNotFoundError as e:
            raise FrameRingError(f'shared memory {spec.name} does not exist (its writer has '
                                 'closed or ended)') from e
        try:
            self._mm = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        self.spec = spec
        self.closed = False
        self._mv = memoryview(self._mm)
        self._map = _Mapped(spec, self._mv)
        if int(self._map.head[0]) != MAGIC:
            self.close()
            raise FrameRingError(f'shared memory {spec.name} is not a frame ring')
        if claim:
            self._map.head[4] = os.getpid()
        self.last_read = 0  # newest frame id consumed

    @property
    def writer_pid(self) -> int:
        return int(self._map.head[3])

    def writer_alive(self) -> bool:
        return pid_alive(self.writer_pid)

    def newest(self) -> int:
        return int(self._map.head[_NEWEST])

    def wait(self, timeout_s: float, poll_s: float = 0.0005) -> int:
        """Blocks until a frame newer than the last one read is complete; returns its id.
        PeerGoneError if the writer has ended, TimeoutError after timeout_s."""
        end = time.monotonic() + timeout_s
        while True:
            fid = self.newest()
            if fid > self.last_read:
                return fid
            if not self.writer_alive():
                raise PeerGoneError(f'the writer of {self.spec.name} (pid {self.writer_pid}) has '
                               'ended')
            if time.monotonic() > end:
                raise TimeoutError(f'no new frame in {self.spec.name} within {timeout_s:g} s')
            time.sleep(poll_s)

    def view(self, frame_id: int) -> tuple[dict[str, np.ndarray], float, int]:
        """Zero-copy views of frame `frame_id`: (camera -> array, stamp_s, sequence). The
        views are valid only if `check(frame_id, sequence)` passes after their last use."""
        if frame_id <= self.last_read:
            raise StaleFrameError(f'frame {frame_id} was read already (newest read '
                             f'{self.last_read})')
        s = frame_id % self.spec.slots
        row = self._map.slots[s]
        seq = int(row[0])
        if seq & 1:
            raise TornFrameError(f'frame slot {s} is being written')
        if int(row[1]) != frame_id:
            raise StaleFrameError(f'frame {frame_id} is not in its slot (it holds frame '
                             f'{int(row[1])}): overwritten, or never written')
        meta = row[_SLOT_WORDS:].reshape(len(self.spec.cameras), _CAM_WORDS).copy()
        stamp_s = float(self._map.stamps[s])
        out = {}
        for i, name in enumerate(self.spec.cameras):
            h, w, c, d = (int(v) for v in meta[i])
            if d < 0:
                continue
            if d >= len(DTYPES):
                raise TornFrameError(f'frame slot {s} has an unknown dtype index {d}')
            shape = (h, w, c) if c else (h, w)
            out[name] = np.ndarray(shape, DTYPES[d], self._map.buf,
                                   self._map.pixel_offsets[s][i])
        self.check(frame_id, seq)
        return out, stamp_s, seq

    def check(self, frame_id: int, seq: int) -> None:
        """TornFrameError if the slot of `frame_id` changed since `view` returned `seq`; marks the
        frame as read otherwise (it is never returned as new again)."""
        row = self._map.slots[frame_id % self.spec.slots]
        if int(row[0]) != seq or int(row[1]) != frame_id:
            raise TornFrameError(f'frame {frame_id} was overwritten while it was read')
        self.last_read = max(self.last_read, frame_id)

    def read(self, frame_id: int, out: Mapping[str, np.ndarray] | None = None
             ) -> tuple[dict[str, np.ndarray], float]:
        """A verified copy of frame `frame_id` (into `out`'s arrays where given and of the
        right shape): (camera -> array, stamp_s). TornFrameError or StaleFrameError otherwise."""
        views, stamp_s, seq = self.view(frame_id)
        copies = {}
        for name, v in views.items():
            dst = (out or {}).get(name)
            if dst is None or dst.shape != v.shape or dst.dtype != v.dtype:
                dst = np.empty_like(v)
            np.copyto(dst, v)
            copies[name] = dst
        del views
        self.check(frame_id, seq)
        return copies, stamp_s

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._map.release()
        try:
            self._mv.release()
            self._mm.close()
        except BufferError:  # a caller still holds a view: the mapping goes with the view
            pass

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _shapes(frames: Mapping[str, np.ndarray]) -> dict[str, tuple]:
    return {n: (tuple(a.shape), str(a.dtype)) for n, a in frames.items()}
