"""ROS messages <-> numpy without cv_bridge (the PyPI cv-bridge is broken, and the real one is
not needed for these encodings).

Reading is zero-copy (np.frombuffer over msg.data) except where rows are padded; filling a
message uses `bytes` (assigning an ndarray to msg.data is ~1600x slower: 116 ms vs 0.07 ms for
640x480 rgb8, measured). Stamps are converted on the node's clock in nanoseconds.
"""

from __future__ import annotations

import cv2
import numpy as np

from vla_ros.runtime.policy.preprocess import ENCODINGS

_CHANNELS = {'rgb8': 3, 'bgr8': 3, 'mono8': 1, 'rgba8': 4, 'bgra8': 4}
# Largest image a camera message may carry (16.8 MP: a 4096x4096 frame, twice 4K UHD). A
# compressed image's size is read from its header before decoding, so an untrusted message
# can cost at most one decode of this size.
MAX_PIXELS = 4096 * 4096
# JPEG start-of-frame markers (SOF0-SOF15 without DHT, JPG and DAC), which carry the size.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class ImageError(ValueError):
    """A camera message that cannot be used; the message says why."""


def stamp_to_s(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def s_to_stamp(t: float, stamp) -> None:
    """Writes seconds into a builtin_interfaces/Time in place."""
    ns = int(round(t * 1e9))
    stamp.sec, stamp.nanosec = ns // 1_000_000_000, ns % 1_000_000_000


def image_to_numpy(msg) -> tuple[np.ndarray, str]:
    """sensor_msgs/Image -> (H, W[, C]) uint8 view and its encoding."""
    enc = msg.encoding.lower()
    if enc not in _CHANNELS:
        raise ImageError(f'image encoding {msg.encoding!r} is not supported; use one of '
                         f'{ENCODINGS}')
    if msg.is_bigendian and enc not in _CHANNELS:
        raise ImageError('big-endian images are not supported')
    c = _CHANNELS[enc]
    h, w, step = msg.height, msg.width, msg.step
    if h < 2 or w < 2:
        raise ImageError(f'image is {w}x{h}; too small to use')
    if h * w > MAX_PIXELS:
        raise ImageError(f'image is {w}x{h}, over the {MAX_PIXELS} pixels a frame may have')
    if step < w * c:
        raise ImageError(f'image step {step} is smaller than width x channels ({w * c})')
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size < h * step:
        raise ImageError(f'image data has {buf.size} bytes, {h * step} expected '
                         f'({w}x{h} {enc}, step {step})')
    rows = buf[:h * step].reshape(h, step)
    if step != w * c:
        rows = rows[:, :w * c]  # padded rows: a strided view
    img = rows.reshape(h, w, c) if c > 1 else rows.reshape(h, w)
    return img, enc


def compressed_to_numpy(msg) -> tuple[np.ndarray, str]:
    """sensor_msgs/CompressedImage (jpeg/png) -> (H, W, 3) uint8 BGR."""
    fmt = msg.format.lower()
    if 'jpeg' not in fmt and 'jpg' not in fmt and 'png' not in fmt:
        raise ImageError(f'compressed format {msg.format!r} is not jpeg or png')
    data = np.frombuffer(msg.data, dtype=np.uint8)
    w, h = compressed_size(bytes(msg.data[:65536]) if len(msg.data) > 65536 else
                           bytes(msg.data))
    if h < 2 or w < 2 or h * w > MAX_PIXELS:
        raise ImageError(f'compressed image header says {w}x{h}; frames must be at least 2x2 '
                         f'and at most {MAX_PIXELS} pixels (not decoded)')
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageError(f'could not decode a {msg.format} image of {data.size} bytes')
    return img, 'bgr8'


def compressed_size(head: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR or a JPEG's start-of-frame segment, without
    decoding; ImageError when the header is not there or is malformed."""
    if head[:8] == b'\x89PNG\r\n\x1a\n':
        if len(head) < 24 or head[12:16] != b'IHDR':
            raise ImageError('PNG without an IHDR header')
        return int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24], 'big')
    if head[:2] != b'\xff\xd8':
        raise ImageError('compressed data is neither JPEG nor PNG')
    i = 2
    while i + 4 <= len(head):
        if head[i] != 0xFF:
            raise ImageError(f'malformed JPEG: no marker at byte {i}')
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        length = int.from_bytes(head[i + 2:i + 4], 'big')
        if marker in _SOF:
            if i + 9 > len(head):
                break
            return int.from_bytes(head[i + 7:i + 9], 'big'), int.from_bytes(head[i + 5:i + 7],
                                                                           'big')
        if marker == 0xDA or length < 2:  # scan data before any frame header
            break
        i += 2 + length
    raise ImageError('JPEG without a frame header in its first 64 KiB')


def numpy_to_image(img: np.ndarray, encoding: str, msg) -> None:
    """Fills a sensor_msgs/Image in place from a contiguous uint8 array."""
    if img.dtype != np.uint8:
        raise ImageError(f'expected uint8, got {img.dtype}')
    c = 1 if img.ndim == 2 else img.shape[2]
    if _CHANNELS.get(encoding) != c:
        raise ImageError(f'{encoding} needs {_CHANNELS.get(encoding)} channels, got {c}')
    msg.height, msg.width = int(img.shape[0]), int(img.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(img.shape[1] * c)
    msg.data = np.ascontiguousarray(img).tobytes()


def numpy_to_compressed(img: np.ndarray, msg, fmt: str = 'jpeg', quality: int = 90) -> None:
    """Fills a sensor_msgs/CompressedImage from a BGR image."""
    ext = '.jpg' if fmt == 'jpeg' else '.png'
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == 'jpeg' else []
    ok, data = cv2.imencode(ext, img, params)
    if not ok:
        raise ImageError(f'could not encode a {fmt} image')
    msg.format = fmt
    msg.data = data.tobytes()
