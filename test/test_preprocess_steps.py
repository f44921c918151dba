"""A camera's upstream image steps, each against its operation done directly (JPEG with PIL, a
resize with cv2 / PIL, the centre crop and A1's resize-and-pad worked by hand), and the
resize-and-pad's per-patch image fraction (the padding fraction of each ViT patch)."""

import io

import cv2
import numpy as np
import pytest
from PIL import Image
from test_preprocess import cam

from vla_ros.runtime.package.manifest import ChannelNorm
from vla_ros.runtime.policy.preprocess import ImagePreprocessor

RAW = ChannelNorm((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def _pixels(out: np.ndarray) -> np.ndarray:
    return out[0, :3].transpose(1, 2, 0) * 255.0


def _noise(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _camera(steps, h: int, w: int, **kw) -> ImagePreprocessor:
    # The final resize is to the steps' own output size, so it keeps every pixel.
    return ImagePreprocessor(cam(norms=(RAW,), height=h, width=w, resize='nearest',
                                 steps=tuple(steps), **kw))


def _pad(size: int, patch: int, fill: float = 0.5) -> dict:
    return {'op': 'resize_pad', 'size': size, 'patch': patch, 'fill': fill,
            'method': 'torch_bilinear'}


def _pil_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, 'JPEG', quality=quality)
    return np.asarray(Image.open(buf).convert('RGB')).astype(np.float64)


def test_a_jpeg_step_round_trips_at_its_quality():
    image = _noise(16, 16)
    out = _pixels(_camera([{'op': 'jpeg', 'quality': 95}], 16, 16)(image, 'rgb8'))
    # libjpeg's fast IDCT decodes a few levels away from PIL's exact one; quality 75 (or
    # no JPEG at all) is tens of levels away on noise.
    assert np.abs(out - _pil_jpeg(image, 95)).max() <= 12
    assert np.abs(out - _pil_jpeg(image, 75)).max() > 25
    assert np.abs(out - image).max() > 25


def test_a_cv2_resize_step_resizes_with_its_method():
    image = _noise(12, 20)
    step = {'op': 'resize', 'height': 6, 'width': 10, 'method': 'bicubic'}
    out = _camera([step], 6, 10)(image, 'rgb8')
    np.testing.assert_allclose(_pixels(out), cv2.resize(image, (10, 6),
                                                        interpolation=cv2.INTER_CUBIC),
                               atol=1e-3)


def test_a_pil_resize_step_resizes_as_pil_does():
    image = _noise(12, 20)
    step = {'op': 'resize', 'height': 6, 'width': 10, 'method': 'pil_bilinear'}
    out = _camera([step], 6, 10)(image, 'rgb8')
    want = np.asarray(Image.fromarray(image).resize((10, 6), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(_pixels(out), want, atol=1e-3)


def test_a_centre_crop_step_zooms_in_on_the_centre():
    image = np.zeros((8, 8, 3), np.uint8)
    image[2:6, 2:6] = 255  # the central quarter of the area
    out = _pixels(_camera([{'op': 'center_crop', 'area': 0.25, 'method': 'tf'}], 8, 8)(
        image, 'rgb8'))
    # The box [0.25, 0.75] samples rows 1.75, 2.25, ..., 5.25: all but the outer ring fall on
    # white; the ring is three quarters white (the corners 9/16), never the black border.
    np.testing.assert_allclose(out[1:7, 1:7], 255.0, atol=1e-3)
    np.testing.assert_allclose(out[0, 1:7], int(0.75 * 255.5), atol=1e-3)
    np.testing.assert_allclose(out[0, 0], int(0.5625 * 255.5), atol=1e-3)


def test_resize_pad_centres_the_image_on_its_fill():
    image = np.empty((8, 16, 3), np.uint8)
    image[:] = (200, 100, 50)
    # 8 x 16 into 8 x 8: scaled by 0.5 to 4 x 8, two rows of fill above and below.
    out = _camera([_pad(8, 4, fill=0.25)], 8, 8)(image, 'rgb8')
    want = np.empty((8, 8, 3))
    want[:] = 0.25 * 255
    want[2:6] = (200, 100, 50)
    np.testing.assert_allclose(_pixels(out), want, atol=1e-3)
    assert out.dtype == np.float32 and out.flags.c_contiguous


def test_resize_pad_output_is_normalized_like_any_other():
    image = np.full((8, 8, 3), 255, np.uint8)
    norm = ChannelNorm((0.5, 0.5, 0.5), (0.5, 0.25, 1.0))
    out = ImagePreprocessor(cam(norms=(norm,), height=8, width=8, steps=(_pad(8, 4),)))(
        image, 'rgb8')
    np.testing.assert_allclose(out[0, :, 3, 3], [1.0, 2.0, 0.5], atol=1e-5)


def test_the_patch_mask_is_the_image_fraction_of_each_patch():
    p = _camera([_pad(12, 4)], 12, 12)
    # 30 x 60 into 12: scaled by 0.2 to 6 x 12, rows 3..8 are image. Patch rows [0, 4),
    # [4, 8), [8, 12) hold 1, 4 and 1 image rows; every column is image.
    mask = p.patch_mask(30, 60)
    assert mask.shape == (1, 9) and mask.dtype == np.float32
    np.testing.assert_array_equal(mask, [[0.25] * 3 + [1.0] * 3 + [0.25] * 3])
    # The other way round the padding is left and right.
    np.testing.assert_array_equal(p.patch_mask(60, 30), [[0.25, 1.0, 0.25] * 3])


def test_a_resize_step_sets_the_size_resize_pad_sees():
    step = {'op': 'resize', 'height': 12, 'width': 6, 'method': 'bilinear'}
    p = _camera([{'op': 'jpeg', 'quality': 90}, step, _pad(12, 4)], 12, 12)
    # Whatever the frame, resize_pad gets 12 x 6: columns 3..8 are image.
    np.testing.assert_array_equal(p.patch_mask(40, 30), [[0.25, 1.0, 0.25] * 3])


@pytest.mark.parametrize('steps', [(), ({'op': 'jpeg', 'quality': 90},),
                                   ({'op': 'resize', 'height': 4, 'width': 4,
                                     'method': 'bilinear'},)])
def test_a_camera_without_resize_pad_has_no_patch_mask(steps):
    assert _camera(steps, 4, 4).patch_mask(30, 60) is None


def test_patch_masks_are_per_frame_size_and_returned_as_copies():
    p = _camera([_pad(12, 4)], 12, 12)
    first = p.patch_mask(30, 60)
    first[:] = -1.0
    np.testing.assert_array_equal(p.patch_mask(30, 60), [[0.25] * 3 + [1.0] * 3 + [0.25] * 3])
    np.testing.assert_array_equal(p.patch_mask(12, 12), [[1.0] * 9])
