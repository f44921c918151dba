"""Preprocessing: images per the camera spec, state/action normalization, prompt layout."""

import numpy as np
import pytest
from conftest import write_tiny_files

from vla_ros.runtime.package.manifest import (
    CameraSpec,
    ChannelNorm,
    Normalization,
    PromptSpec,
    SpaceSpec,
)
from vla_ros.runtime.policy.preprocess import ImagePreprocessor, PromptBuilder, SpaceNormalizer

NORM = ChannelNorm((0.5, 0.25, 0.0), (0.5, 0.25, 1.0))


def cam(**kw) -> CameraSpec:
    return CameraSpec(**{'name': 'scene', 'height': 8, 'width': 8, 'resize': 'bilinear',
                         'norms': (NORM,), **kw})


def test_constant_image_normalizes_to_known_values():
    out = ImagePreprocessor(cam())(np.full((16, 16, 3), 255, np.uint8), 'rgb8')
    assert out.shape == (1, 3, 8, 8) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, 0, 0], [(1 - 0.5) / 0.5, (1 - 0.25) / 0.25, 1.0],
                               rtol=1e-6)


def test_bgr_and_rgb_inputs_give_the_same_tensor():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    p = ImagePreprocessor(cam())
    np.testing.assert_array_equal(p(rgb, 'rgb8'), p(rgb[..., ::-1].copy(), 'bgr8'))


def test_a_bgr_model_gets_bgr_channels():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    out = ImagePreprocessor(cam(channel_order='bgr', norms=(ChannelNorm((0, 0, 0),
                                                                        (1, 1, 1)),)))(rgb,
                                                                                        'rgb8')
    np.testing.assert_allclose(out[0, :, 0, 0], [0.0, 0.0, 1.0])


@pytest.mark.parametrize('encoding,shape', [('mono8', (8, 8)), ('rgba8', (8, 8, 4)),
                                            ('bgra8', (8, 8, 4))])
def test_other_encodings_become_three_channels(encoding, shape):
    out = ImagePreprocessor(cam())(np.full(shape, 128, np.uint8), encoding)
    assert out.shape == (1, 3, 8, 8)


def test_two_normalization_streams_stack_along_channels():
    spec = cam(norms=(NORM, ChannelNorm((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))))
    out = ImagePreprocessor(spec)(np.zeros((8, 8, 3), np.uint8), 'rgb8')
    assert out.shape == (1, 6, 8, 8)
    np.testing.assert_allclose(out[0, 3:, 0, 0], [-1.0, -1.0, -1.0])


def test_center_crop_keeps_the_middle_area_fraction():
    img = np.zeros((100, 100, 3), np.uint8)
    img[25:75, 25:75] = 255  # the central quarter of the area
    out = ImagePreprocessor(cam(crop_scale=0.25, norms=(ChannelNorm((0, 0, 0),
                                                                    (1, 1, 1)),)))(img, 'rgb8')
    assert out.min() == pytest.approx(1.0)


@pytest.mark.parametrize('image,encoding,match', [
    (np.zeros((8, 8, 3), np.float32), 'rgb8', 'uint8'),
    (np.zeros((8, 8), np.uint8), 'rgb8', 'rgb8 uint8'),
    (np.zeros((8, 8, 3), np.uint8), '16UC1', 'encoding'),
])
def test_bad_images_are_rejected_with_a_clear_error(image, encoding, match):
    with pytest.raises(ValueError, match=match):
        ImagePreprocessor(cam())(image, encoding)


@pytest.mark.parametrize('norm', [
    Normalization('bounds', {'min': (-1.0, 0.0), 'max': (1.0, 4.0)}),
    Normalization('bounds_q99', {'q01': (-2.0, 0.0), 'q99': (2.0, 1.0)}),
    Normalization('mean_std', {'mean': (0.5, -1.0), 'std': (2.0, 0.5)}),
    Normalization('identity'),
])
def test_normalization_round_trips_and_pads(norm):
    n = SpaceNormalizer(SpaceSpec(('a', 'b'), model_dim=4, normalization=norm))
    raw = np.array([0.3, 0.7])
    y = n.normalize(raw)
    assert y.shape == (4,) and np.all(y[2:] == 0)
    np.testing.assert_allclose(n.denormalize(y), raw, atol=1e-6)


def test_bounds_normalization_maps_the_range_to_minus_one_one():
    n = SpaceNormalizer(SpaceSpec(('a',), 1, Normalization('bounds', {'min': (2.0,),
                                                                       'max': (4.0,)})))
    np.testing.assert_allclose(n.normalize(np.array([2.0, 3.0, 4.0])[:, None])[:, 0],
                               [-1, 0, 1], atol=1e-6)


def test_clip_bounds_out_of_range_states():
    n = SpaceNormalizer(SpaceSpec(('a',), 1, Normalization('bounds', {'min': (0.0,),
                                                                       'max': (1.0,)},
                                                           clip=True)))
    assert n.normalize(np.array([5.0]))[0] == 1.0


def test_wrong_state_length_names_the_entries():
    n = SpaceNormalizer(SpaceSpec(('j1', 'j2'), 2))
    with pytest.raises(ValueError, match='j1, j2'):
        n.normalize(np.zeros(3))


@pytest.fixture
def tokenizer_file(tmp_path):
    write_tiny_files(tmp_path)
    return str(tmp_path / 'tokenizer.json')


def _prompt(**kw) -> PromptSpec:
    layout = ({'kind': 'tokens', 'ids': [9], 'repeat': 1},
              {'kind': 'image', 'camera': 'wrist', 'id': 7, 'count': 2},
              {'kind': 'text'}, {'kind': 'tokens', 'ids': [5], 'repeat': 3})
    return PromptSpec(tokenizer_file='tokenizer.json', max_length=4, pad_id=0,
                      layout=layout, **kw)


def test_prompt_follows_the_layout_and_masks_padding(tokenizer_file):
    ids, mask = PromptBuilder(_prompt(), tokenizer_file)('pick up')
    assert ids.tolist() == [[9, 7, 7, 2, 3, 0, 0, 5, 5, 5]]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 0, 0, 1, 1, 1]]


def test_missing_optional_camera_is_masked(tokenizer_file):
    _, mask = PromptBuilder(_prompt(), tokenizer_file)('pick up', frozenset({'wrist'}))
    assert mask[0, 1:3].tolist() == [0, 0]


def test_long_instructions_are_truncated_to_the_text_length(tokenizer_file):
    b = PromptBuilder(_prompt(), tokenizer_file)
    ids, mask = b('pick up pick up pick up')
    assert ids.shape == (1, 10) and mask[0, 3:7].tolist() == [1, 1, 1, 1]
    assert b.truncated('pick up pick up pick up') and not b.truncated('pick')


def test_cached_prompts_are_returned_as_copies(tokenizer_file):
    b = PromptBuilder(_prompt(), tokenizer_file)
    ids, _ = b('pick')
    ids[0, 0] = 99
    assert b('pick')[0][0, 0] == 9
