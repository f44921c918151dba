"""Preprocessing at its edges: the blank view of a missing camera, eps and clipping of the
bounds normalization both ways, masked entries passing through raw, the gripper's
post-processing chain, a prompt exactly at its text length. Each test pins one behaviour a
silent change would break (found by `make mutation ARGS=preprocess`)."""

import numpy as np
import pytest
from test_preprocess import NORM, _prompt, cam, tokenizer_file  # noqa: F401 (a fixture)

from vla_ros.runtime.package.manifest import ChannelNorm, GripperSpec, Normalization, SpaceSpec
from vla_ros.runtime.policy.preprocess import (
    ImagePreprocessor,
    PromptBuilder,
    SpaceNormalizer,
    postprocess_gripper,
)

TWO_STREAMS = (NORM, ChannelNorm((0.5, 0.5, 0.5), (0.25, 0.5, 1.0)))


def test_a_missing_view_is_zeros_in_the_models_space_by_default():
    p = ImagePreprocessor(cam(norms=TWO_STREAMS, required=False, height=4, width=6))
    out = p.blank()
    assert out.shape == (1, 6, 4, 6) and out.dtype == np.float32 and not out.any()


def test_a_black_missing_view_is_a_black_image_normalized_per_stream():
    p = ImagePreprocessor(cam(norms=TWO_STREAMS, required=False, missing='black', height=4,
                              width=6))
    black = p(np.zeros((4, 6, 3), np.uint8), 'rgb8')
    out = p.blank()
    assert out.shape == black.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, black, rtol=1e-6)
    assert out[0, 3, 0, 0] == pytest.approx(-2.0)  # -0.5 / 0.25, the second stream's red


def _bounds(lo, hi, **kw) -> Normalization:
    return Normalization('bounds', {'min': lo, 'max': hi}, **kw)


def test_bounds_add_eps_to_the_range_both_ways():
    n = SpaceNormalizer(SpaceSpec(('a',), 1, _bounds((0.0,), (1.0,), eps=1.0)))
    assert n.normalize(np.array([0.5]))[0] == pytest.approx(2 * 0.5 / 2.0 - 1)
    assert n.denormalize(np.array([-0.5]))[0] == pytest.approx(0.5 * 0.5 * 2.0)


def test_clipping_bounds_both_ends():
    n = SpaceNormalizer(SpaceSpec(('a',), 1, _bounds((0.0,), (1.0,), clip=True)))
    np.testing.assert_allclose(n.normalize(np.array([[-3.0], [0.25], [5.0]]))[:, 0],
                               [-1.0, -0.5, 1.0], atol=1e-6)


def test_masked_out_entries_pass_through_raw_both_ways():
    spec = SpaceSpec(('x', 'grip'), 3, _bounds((0.0, 0.0), (2.0, 2.0), clip=True,
                                                mask=(True, False)))
    n = SpaceNormalizer(spec)
    y = n.normalize(np.array([1.5, 7.0]))
    np.testing.assert_allclose(y, [0.5, 7.0, 0.0], atol=1e-6)  # 7 neither scaled nor clipped
    np.testing.assert_allclose(n.denormalize(np.array([0.5, 0.3, 9.0])), [1.5, 0.3], atol=1e-6)


def test_the_gripper_chain_rescales_then_binarizes_then_inverts():
    actions = np.array([[0.3, 0.75], [0.3, 0.2]])
    steps = [(GripperSpec(1, rescale=True), [0.5, -0.6]),
             (GripperSpec(1, binarize=True), [1.0, 1.0]),
             (GripperSpec(1, invert=True), [-0.75, -0.2]),
             (GripperSpec(1, rescale=True, binarize=True, invert=True), [-1.0, 1.0])]
    for spec, want in steps:
        out = postprocess_gripper(actions, spec)
        np.testing.assert_allclose(out[:, 1], want, atol=1e-12)
        np.testing.assert_array_equal(out[:, 0], actions[:, 0])  # other entries untouched
        assert out.dtype == np.float64
    assert actions.tolist() == [[0.3, 0.75], [0.3, 0.2]]  # a copy, the input kept
    assert postprocess_gripper(actions, None) is actions


def test_a_prompt_exactly_at_the_text_length_is_not_truncated(tokenizer_file):  # noqa: F811
    b = PromptBuilder(_prompt(), tokenizer_file)  # max_length 4; 'pick up' is 2 tokens
    assert not b.truncated('pick up pick up') and b.truncated('pick up pick up pick')


def test_only_a_lowercasing_prompt_lowercases_the_instruction(tokenizer_file):  # noqa: F811
    lower = PromptBuilder(_prompt(lowercase=True), tokenizer_file)
    assert lower('PICK Up')[0].tolist() == lower('pick up')[0].tolist()
    kept = PromptBuilder(_prompt(lowercase=False), tokenizer_file)
    assert kept('PICK Up')[0].tolist() != kept('pick up')[0].tolist()
