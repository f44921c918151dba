"""Latest-only input slots filled by subscription callbacks and read by the worker and the
control loop. A callback only stores the message's decoded view and stamp; conversion errors
are counted and reported, never raised into the executor. Imports no rclpy (messages are
duck-typed), so it is tested without a ROS graph.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from vla_ros.ros.conversions import ImageError, compressed_to_numpy, image_to_numpy, stamp_to_s


@dataclass
class Frame:
    image: np.ndarray
    encoding: str
    stamp_s: float  # header stamp (capture time)
    received_s: float  # node clock at arrival


@dataclass
class JointSample:
    names: list[str]
    positions: np.ndarray
    stamp_s: float
    received_s: float


@dataclass
class InputErrors:
    count: int = 0
    last: str = ''
    by_source: dict[str, int] = field(default_factory=dict)


class InputSlots:
    """One slot per camera plus joint states and instruction. Thread-safe; returns the stored
    objects, which are never mutated after being stored."""

    def __init__(self, cameras: list[str]) -> None:
        self.cameras = list(cameras)
        self._lock = threading.Lock()
        self._frames: dict[str, Frame] = {}
        self._joints: JointSample | None = None
        self.instruction = ''
        self.errors = InputErrors()

    def _error(self, source: str, message: str) -> None:
        with self._lock:
            self.errors.count += 1
            self.errors.last = f'{source}: {message}'
            self.errors.by_source[source] = self.errors.by_source.get(source, 0) + 1

    def put_image(self, camera: str, msg, now_s: float, compressed: bool = False) -> bool:
        try:
            img, enc = compressed_to_numpy(msg) if compressed else image_to_numpy(msg)
        except ImageError as e:
            self._error(camera, str(e))
            return False
        frame = Frame(img, enc, stamp_to_s(msg.header.stamp), now_s)
        with self._lock:
            self._frames[camera] = frame
        return True

    def put_joints(self, msg, now_s: float) -> bool:
        n = len(msg.name)
        if n == 0 or len(msg.position) != n:
            self._error('joint_states', f'{n} names but {len(msg.position)} positions')
            return False
        if len(set(msg.name)) != n:
            dup = sorted({x for x in msg.name if list(msg.name).count(x) > 1})
            # Which of the two is the arm? Neither is trusted: the message is refused.
            self._error('joint_states', f'duplicate joint names {dup}')
            return False
        pos = np.asarray(msg.position, dtype=np.float64)
        if not np.all(np.isfinite(pos)):
            self._error('joint_states', 'non-finite positions')
            return False
        sample = JointSample(list(msg.name), pos, stamp_to_s(msg.header.stamp), now_s)
        with self._lock:
            self._joints = sample
        return True

    def frames(self) -> dict[str, Frame]:
        with self._lock:
            return dict(self._frames)

    def joints(self) -> JointSample | None:
        with self._lock:
            return self._joints

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._joints = None

    def staleness(self, now_s: float, max_age_s: float) -> str:
        """'' when every input is fresh (by arrival time on the node's clock), else which is
        stale or missing. Arrival time is used because camera clocks may be offset."""
        frames, joints = self.frames(), self.joints()
        stale = camera_staleness(self.cameras, {c: f.received_s for c, f in frames.items()},
                                 now_s, max_age_s)
        if stale:
            return stale
        if joints is None:
            return 'no joint_states yet'
        if now_s - joints.received_s > max_age_s:
            return f'joint_states stale ({(now_s - joints.received_s) * 1000:.0f} ms)'
        return ''

    def skew_s(self) -> float:
        stamps = [f.stamp_s for f in self.frames().values()]
        return max(stamps) - min(stamps) if len(stamps) > 1 else 0.0


def camera_staleness(cameras, received_s: dict[str, float], now_s: float,
                     max_age_s: float) -> str:
    """'' when every camera's last frame arrived (`received_s`, node clock) within max_age_s,
    else which one is missing or stale. Also what the control process checks with the
    arrival times the node sends it."""
    for cam in cameras:
        received = received_s.get(cam)
        if received is None:
            return f'no image yet from camera {cam}'
        if now_s - received > max_age_s:
            return f'camera {cam} stale ({(now_s - received) * 1000:.0f} ms)'
    return ''
