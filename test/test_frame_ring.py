"""Camera frames through shared memory: never torn, never read twice as new, a dead peer is
an error (not a hang), the segment is unlinked on close and after the writer is killed."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from vla_ros.runtime.serving.frame_ring import (
    FrameReader,
    FrameRing,
    PeerGoneError,
    RingSpec,
    StaleFrameError,
    TornFrameError,
)

CAMS = ('front', 'wrist', 'side')
SHAPE = (480, 640, 3)

# A writer in its own process: every pixel of every camera of frame k holds k % 251, written
# as fast as it can until killed. It prints the ring's name once the ring exists.
_WRITER = """
import sys, time, numpy as np
from vla_ros.runtime.serving.frame_ring import FrameRing
cams = {cams!r}
ring = FrameRing(cams, [{nbytes}] * len(cams), slots=2)
print(ring.spec.name, flush=True)
frames = {{c: np.zeros({shape!r}, np.uint8) for c in cams}}
k = 0
end = time.monotonic() + {seconds}
while time.monotonic() < end:
    k += 1
    for a in frames.values():
        a.fill(k % 251)
    ring.write(frames, float(k))
print('done', k, flush=True)
sys.stdin.readline()
ring.close()
"""


def _spec(name: str) -> RingSpec:
    return RingSpec(name, CAMS, (int(np.prod(SHAPE)),) * len(CAMS), 2)


def _start_writer(seconds: float):
    code = _WRITER.format(cams=CAMS, nbytes=int(np.prod(SHAPE)), shape=SHAPE, seconds=seconds)
    proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE,
                            stdin=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def _frames(value: int) -> dict[str, np.ndarray]:
    return {c: np.full(SHAPE, value % 251, np.uint8) for c in CAMS}


def test_a_reader_beside_a_writer_never_returns_a_mixed_frame():
    writer, name = _start_writer(seconds=2.5)
    reader = FrameReader(_spec(name))
    good = torn = 0
    try:
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            fid = reader.wait(timeout_s=5.0)
            try:
                frames, stamp_s = reader.read(fid)
            except (TornFrameError, StaleFrameError):  # overwritten meanwhile: refused
                torn += 1
                continue
            expected = fid % 251
            for cam in CAMS:  # one value across every pixel of every camera
                assert frames[cam].min() == frames[cam].max() == expected, (fid, cam)
            assert stamp_s == float(fid)
            good += 1
    finally:
        reader.close()
        writer.communicate('\n', timeout=10)  # the writer closes (unlinks) its ring
    assert good > 10
    print(f'{good} frames read whole, {torn} refused as overwritten')


def test_a_view_overwritten_before_its_check_is_refused():
    with FrameRing(CAMS, [int(np.prod(SHAPE))] * 3, slots=2) as ring:
        reader = FrameReader(ring.spec)
        fid = ring.write(_frames(1))
        views, _stamp, seq = reader.view(fid)
        assert views['front'][0, 0, 0] == 1
        ring.write(_frames(2))
        ring.write(_frames(3))  # lands in the slot of frame 1
        with pytest.raises(TornFrameError):
            reader.check(fid, seq)
        del views
        reader.close()


def test_a_frame_is_read_as_new_once_only():
    with FrameRing(CAMS, [int(np.prod(SHAPE))] * 3, slots=3) as ring:
        reader = FrameReader(ring.spec)
        first = ring.write(_frames(7))
        assert reader.wait(timeout_s=1.0) == first
        frames, _ = reader.read(first)
        assert frames['side'][5, 5, 1] == 7
        with pytest.raises(StaleFrameError):
            reader.read(first)
        with pytest.raises(TimeoutError):
            reader.wait(timeout_s=0.05)  # nothing newer than what was read
        second = ring.write(_frames(8))
        older = ring.write(_frames(9))
        assert reader.wait(timeout_s=1.0) == older
        reader.read(older)
        with pytest.raises(StaleFrameError):
            reader.read(second)  # older than one read already: not new
        reader.close()


def test_frames_of_other_sizes_and_absent_cameras_round_trip():
    with FrameRing(CAMS, [int(np.prod(SHAPE))] * 3) as ring:
        reader = FrameReader(ring.spec)
        mono = np.arange(120 * 160, dtype=np.uint16).reshape(120, 160)
        fid = ring.write({'front': mono}, 2.5)
        frames, stamp_s = reader.read(fid)
        assert set(frames) == {'front'} and stamp_s == 2.5
        np.testing.assert_array_equal(frames['front'], mono)
        assert not ring.fits({'front': np.zeros((481, 640, 3), np.uint8)})
        with pytest.raises(ValueError, match='do not fit'):
            ring.write({'front': np.zeros(SHAPE, np.float64)})
        reader.close()


def test_a_killed_writer_is_detected_and_its_segment_unlinked():
    writer, name = _start_writer(seconds=30.0)
    reader = FrameReader(_spec(name))
    reader.last_read = reader.wait(timeout_s=5.0)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(5)
    t0 = time.monotonic()
    with pytest.raises(PeerGoneError, match='ended'):
        while True:  # frames written before the kill are still new; then the writer is gone
            reader.last_read = reader.wait(timeout_s=5.0)
    assert time.monotonic() - t0 < 5.0
    reader.close()
    # The writer's resource tracker unlinks what the killed writer left.
    end = time.monotonic() + 10.0
    while os.path.exists(f'/dev/shm/{name}') and time.monotonic() < end:
        time.sleep(0.1)
    assert not os.path.exists(f'/dev/shm/{name}')


def test_a_dead_reader_is_detected_by_the_writer():
    with FrameRing(CAMS, [int(np.prod(SHAPE))] * 3) as ring:
        assert ring.reader_alive()  # no reader yet
        code = ('import sys; from vla_ros.runtime.serving.frame_ring import FrameReader, '
                f'RingSpec; r = FrameReader({ring.spec!r}); print("attached", flush=True); '
                'sys.stdin.readline()')
        reader = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE,
                                  stdin=subprocess.PIPE, text=True)
        assert reader.stdout.readline().strip() == 'attached'
        assert ring.reader_pid == reader.pid and ring.reader_alive()
        reader.kill()
        reader.wait(5)
        assert not ring.reader_alive()


def test_close_unlinks_the_segment_and_a_reader_then_fails_clearly():
    ring = FrameRing(CAMS, [1024] * 3)
    name = ring.spec.name
    assert os.path.exists(f'/dev/shm/{name}')
    ring.close()
    assert not os.path.exists(f'/dev/shm/{name}')
    with pytest.raises(Exception, match='does not exist'):
        FrameReader(ring.spec)
