"""A camera's image to the model's tensor, checked against cv2 / PIL / numpy doing each step
directly: the channel order an RGB model gets, every resize method, the centred crop of an area
fraction (down to one pixel), three normalization streams, the per-stream letterbox fill, and
the smallest image accepted."""

import cv2
import numpy as np
import pytest
from PIL import Image
from test_preprocess import cam

from vla_ros.runtime.package.manifest import ChannelNorm
from vla_ros.runtime.policy.preprocess import ImagePreprocessor

RAW = ChannelNorm((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # x / 255: the model's tensor * 255 = pixels


def _pixels(out: np.ndarray, stream: int = 0) -> np.ndarray:
    """(1, C, H, W) of a RAW stream -> (H, W, 3) on the 0-255 scale."""
    return out[0, 3 * stream:3 * stream + 3].transpose(1, 2, 0) * 255.0


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize('encoding,pixel', [('rgb8', (255, 0, 0)), ('bgr8', (0, 0, 255)),
                                            ('rgba8', (255, 0, 0, 9)), ('bgra8', (0, 0, 255, 9))])
def test_an_rgb_model_gets_red_in_its_first_channel(encoding, pixel):
    image = np.empty((4, 4, len(pixel)), np.uint8)
    image[:] = pixel
    out = ImagePreprocessor(cam(norms=(RAW,), height=4, width=4))(image, encoding)
    np.testing.assert_allclose(out[0, :, 2, 2], [1.0, 0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize('method,flag', [('bicubic', cv2.INTER_CUBIC),
                                         ('bilinear', cv2.INTER_LINEAR),
                                         ('area', cv2.INTER_AREA),
                                         ('lanczos', cv2.INTER_LANCZOS4),
                                         ('nearest', cv2.INTER_NEAREST)])
def test_a_cv2_method_resizes_as_cv2_does(method, flag):
    image = _noise(12, 20)
    out = ImagePreprocessor(cam(norms=(RAW,), height=6, width=10, resize=method))(image, 'rgb8')
    assert out.shape == (1, 3, 6, 10)
    np.testing.assert_allclose(_pixels(out), cv2.resize(image, (10, 6), interpolation=flag),
                               atol=1e-3)


@pytest.mark.parametrize('method,pil', [('pil_bicubic', Image.Resampling.BICUBIC),
                                        ('pil_bilinear', Image.Resampling.BILINEAR),
                                        ('pil_lanczos', Image.Resampling.LANCZOS)])
def test_a_pil_method_resizes_as_pil_does(method, pil):
    image = _noise(12, 20)
    out = ImagePreprocessor(cam(norms=(RAW,), height=6, width=10, resize=method))(image, 'rgb8')
    want = np.asarray(Image.fromarray(image).resize((10, 6), pil))
    np.testing.assert_allclose(_pixels(out), want, atol=1e-3)


def test_tensorflows_resize_keeps_a_flat_colour():
    image = np.empty((12, 20, 3), np.uint8)
    image[:] = (200, 100, 50)
    out = ImagePreprocessor(cam(norms=(RAW,), height=6, width=10, resize='tf_lanczos3'))(
        image, 'rgb8')
    assert out.shape == (1, 3, 6, 10)
    np.testing.assert_allclose(_pixels(out), np.broadcast_to([200, 100, 50], (6, 10, 3)),
                               atol=1e-3)


def test_the_crop_takes_the_centred_area_fraction():
    image = _noise(10, 20)
    # area 0.36: sides 0.6 -> 6 x 12, from (10 - 6) // 2 = 2 and (20 - 12) // 2 = 4; the camera
    # is that size, so the resize keeps every pixel.
    out = ImagePreprocessor(cam(norms=(RAW,), height=6, width=12, crop_scale=0.36))(image,
                                                                                    'rgb8')
    np.testing.assert_allclose(_pixels(out), image[2:8, 4:16], atol=1e-3)


def test_a_tiny_crop_keeps_the_centre_pixel():
    image = _noise(4, 4)  # sides 0.1 * 4 round to 0: one pixel is kept, at (1, 1)
    out = ImagePreprocessor(cam(norms=(RAW,), height=2, width=2, resize='nearest',
                                crop_scale=0.01))(image, 'rgb8')
    np.testing.assert_allclose(_pixels(out), np.broadcast_to(image[1, 1], (2, 2, 3)), atol=1e-3)


def test_three_streams_each_fill_their_own_three_channels():
    norms = (RAW, ChannelNorm((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
             ChannelNorm((0.0, 0.2, 0.4), (0.25, 0.5, 2.0)))
    image = np.empty((4, 4, 3), np.uint8)
    image[:] = (255, 51, 0)  # 1.0, 0.2, 0.0
    out = ImagePreprocessor(cam(norms=norms, height=4, width=4))(image, 'rgb8')
    assert out.shape == (1, 9, 4, 4)
    np.testing.assert_allclose(out[0, :, 1, 1], [1.0, 0.2, 0.0,
                                                 1.0, -0.6, -1.0,
                                                 4.0, 0.0, -0.2], atol=1e-6)


def test_the_letterbox_pads_each_stream_with_its_own_fill():
    # A 2 x 4 image letterboxed to 4 x 4: one row of fill above and below. The first stream
    # names its fill; the second fills with its mean, rounded on the 0-255 scale.
    image = _noise(2, 4)
    mean = (0.8, 0.2, 0.4)  # -> (204, 51, 102)
    norms = (ChannelNorm((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), fill=(10, 20, 30)),
             ChannelNorm(mean, (1.0, 1.0, 1.0)))
    p = ImagePreprocessor(cam(norms=norms, height=4, width=4, resize='nearest', letterbox=True))
    out = p(image, 'rgb8')
    assert out.shape == (1, 6, 4, 4)
    first = np.concatenate([np.full((1, 4, 3), (10, 20, 30)), image,
                            np.full((1, 4, 3), (10, 20, 30))])
    np.testing.assert_allclose(_pixels(out, 0), first, atol=1e-3)
    second = np.concatenate([np.full((1, 4, 3), (204, 51, 102)), image,
                             np.full((1, 4, 3), (204, 51, 102))])
    np.testing.assert_allclose(out[0, 3:].transpose(1, 2, 0),
                               second / 255.0 - np.array(mean), atol=1e-6)


def test_a_two_pixel_image_is_the_smallest_accepted():
    p = ImagePreprocessor(cam(norms=(RAW,), height=2, width=2))
    image = _noise(2, 2)
    np.testing.assert_allclose(_pixels(p(image, 'rgb8')), image, atol=1e-3)
    for shape in ((1, 5, 3), (5, 1, 3)):
        with pytest.raises(ValueError, match='expected a rgb8 uint8 image'):
            p(np.zeros(shape, np.uint8), 'rgb8')
