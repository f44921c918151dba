"""State and action vectors: bounds_q99's own statistics, hand-worked, and the dtypes each
side of the model (float32 into it; float64 robot-space actions out of it, whatever the kind
and whatever the model returned)."""

import numpy as np
import pytest

from vla_ros.runtime.package.manifest import GripperSpec, Normalization, SpaceSpec
from vla_ros.runtime.policy.preprocess import SpaceNormalizer, postprocess_gripper

KINDS = [Normalization('bounds', {'min': (-1.0, 0.0), 'max': (1.0, 4.0)}),
         Normalization('bounds_q99', {'q01': (-2.0, 0.0), 'q99': (2.0, 1.0)}),
         Normalization('mean_std', {'mean': (0.5, -1.0), 'std': (2.0, 0.5)}),
         Normalization('identity'),
         Normalization('bounds', {'min': (0.0, 0.0), 'max': (2.0, 2.0)}, mask=(True, False))]


def test_bounds_q99_maps_q01_and_q99_to_minus_one_and_one():
    n = SpaceNormalizer(SpaceSpec(('a', 'b'), 2, Normalization(
        'bounds_q99', {'q01': (-2.0, 0.0), 'q99': (2.0, 1.0)}, eps=0.0)))
    # a: 2 (1 + 2) / 4 - 1 = 0.5; b: 2 (0.25 - 0) / 1 - 1 = -0.5
    np.testing.assert_allclose(n.normalize(np.array([1.0, 0.25])), [0.5, -0.5], atol=1e-7)
    np.testing.assert_allclose(n.normalize(np.array([[-2.0, 0.0], [2.0, 1.0]])),
                               [[-1.0, -1.0], [1.0, 1.0]], atol=1e-7)
    np.testing.assert_allclose(n.denormalize(np.array([0.5, -0.5])), [1.0, 0.25], atol=1e-12)


@pytest.mark.parametrize('norm', KINDS)
def test_normalized_vectors_are_float32_for_every_kind(norm):
    n = SpaceNormalizer(SpaceSpec(('a', 'b'), 3, norm))
    for raw in (np.array([0.3, 0.7]), np.array([1, 2]), [0.3, 0.7]):
        assert n.normalize(raw).dtype == np.float32


@pytest.mark.parametrize('norm', KINDS)
def test_denormalized_vectors_are_float64_for_every_kind(norm):
    n = SpaceNormalizer(SpaceSpec(('a', 'b'), 3, norm))
    out = n.denormalize(np.array([[0.25, -0.5, 9.0]], np.float32))  # as a model returns them
    assert out.shape == (1, 2) and out.dtype == np.float64


def test_the_gripper_is_postprocessed_in_float64_whatever_the_input():
    actions = np.array([[0.3, 0.3]], np.float32)
    out = postprocess_gripper(actions, GripperSpec(1, rescale=True))
    assert out.dtype == np.float64
    # 2 x - 1 of the float32 value, computed in float64 (float32 arithmetic rounds it)
    assert out[0, 1] == 2.0 * float(np.float32(0.3)) - 1.0
    assert out[0, 0] == float(np.float32(0.3))
