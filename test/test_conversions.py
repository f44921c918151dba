"""Camera and stamp messages <-> numpy: decoded as the encoding says, padded rows handled,
every malformed or oversized message refused with its reason, a compressed image's size read
from its header so an oversized one is never decoded."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image

from vla_ros.ros import conversions
from vla_ros.ros.conversions import (
    ImageError,
    compressed_size,
    compressed_to_numpy,
    image_to_numpy,
    numpy_to_compressed,
    numpy_to_image,
    s_to_stamp,
    stamp_to_s,
)

RNG = np.random.default_rng(0)


def test_an_image_round_trips_through_a_message():
    img = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    msg = Image()
    numpy_to_image(img, 'rgb8', msg)
    out, enc = image_to_numpy(msg)
    assert enc == 'rgb8' and np.array_equal(out, img)


def test_padded_rows_are_cut_to_the_width():
    img = RNG.integers(0, 256, (4, 3, 3), dtype=np.uint8)
    padded = np.zeros((4, 12), np.uint8)
    padded[:, :9] = img.reshape(4, 9)
    msg = Image(height=4, width=3, encoding='bgr8', step=12, data=padded.tobytes())
    out, _ = image_to_numpy(msg)
    assert np.array_equal(out, img)


@pytest.mark.parametrize('change,reason', [
    ({'encoding': '16UC1'}, 'not supported'),
    ({'height': 1}, 'too small'),
    ({'step': 8}, 'smaller than width'),
    ({'data': bytes(10)}, 'bytes'),
    ({'height': 5000, 'width': 5000, 'step': 15000}, 'pixels'),
])
def test_a_malformed_image_is_refused_with_its_reason(change, reason):
    msg = Image(height=4, width=4, encoding='rgb8', step=12, data=bytes(48))
    for k, v in change.items():
        setattr(msg, k, v)
    with pytest.raises(ImageError, match=reason):
        image_to_numpy(msg)


@pytest.mark.parametrize('fmt', ['jpeg', 'png'])
def test_the_size_of_a_compressed_image_is_read_from_its_header(fmt):
    img = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    msg = CompressedImage()
    numpy_to_compressed(img, msg, fmt)
    assert compressed_size(bytes(msg.data)) == (53, 37)
    out, enc = compressed_to_numpy(msg)
    assert out.shape == (37, 53, 3) and enc == 'bgr8'


def test_a_progressive_jpeg_size_is_read_too():
    img = RNG.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    ok, data = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok and compressed_size(data.tobytes()) == (30, 40)


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A tiny real JPEG whose frame header is rewritten to claim another size."""
    ok, data = cv2.imencode('.jpg', np.zeros((8, 8, 3), np.uint8))
    b = bytearray(data.tobytes())
    i = b.index(b'\xff\xc0')
    b[i + 5:i + 7] = height.to_bytes(2, 'big')
    b[i + 7:i + 9] = width.to_bytes(2, 'big')
    return bytes(b)


def test_an_oversized_compressed_image_is_refused_without_decoding(monkeypatch):
    decoded = []
    monkeypatch.setattr(conversions.cv2, 'imdecode',
                        lambda *a: decoded.append(1) or np.zeros((8, 8, 3), np.uint8))
    msg = CompressedImage(format='jpeg', data=_jpeg_claiming(60000, 60000))
    with pytest.raises(ImageError, match='not decoded'):
        compressed_to_numpy(msg)
    assert decoded == []
    ok = CompressedImage(format='jpeg', data=_jpeg_claiming(8, 8))
    compressed_to_numpy(ok)
    assert decoded == [1]


@pytest.mark.parametrize('data,reason', [
    (b'GIF89a' + bytes(20), 'neither JPEG nor PNG'),
    (b'\x89PNG\r\n\x1a\n' + bytes(4) + b'IDAT', 'IHDR'),
    (b'\xff\xd8\xff\xda\x00\x08' + bytes(40), 'frame header'),
    (b'\xff\xd8\x00\x00\x00\x00', 'no marker'),
])
def test_a_compressed_image_without_a_usable_header_is_refused(data, reason):
    with pytest.raises(ImageError, match=reason):
        compressed_size(data)


def test_undecodable_compressed_data_is_refused():
    png = CompressedImage()
    numpy_to_compressed(np.zeros((8, 8, 3), np.uint8), png, 'png')
    msg = CompressedImage(format='png', data=bytes(png.data)[:40])  # IHDR, then nothing
    with pytest.raises(ImageError, match='could not decode'):
        compressed_to_numpy(msg)


def test_stamps_keep_nanoseconds():
    t = Time()
    s_to_stamp(1796173475.123456789, t)
    assert t.sec == 1796173475 and abs(t.nanosec - 123456789) < 300
    assert stamp_to_s(t) == pytest.approx(1796173475.123456789, abs=1e-6)
