"""Early-exit calibration as A1's `ExitController.set_threshold` (test/data/parity/a1)."""

from pathlib import Path

import numpy as np

from vla_ros.runtime.package.loader import load_package
from vla_ros.runtime.policy.early_exit import (
    NEVER,
    discrepancy,
    exit_distribution,
    filtered_quantile_thresholds,
    simulate_exits,
)

HERE = Path(__file__).parent
CASE = np.load(HERE / 'data' / 'parity' / 'a1' / 'case.npz')


def test_thresholds_reproduce_a1_on_the_recorded_delta_matrix():
    q = exit_distribution('exp', float(CASE['exit_ratio']), CASE['delta_matrix'].shape[0])
    t = filtered_quantile_thresholds(CASE['delta_matrix'], q)
    np.testing.assert_array_equal(t.astype(np.float32), CASE['thresholds'])


def test_a_quota_beyond_the_samples_left_keeps_nobody_exiting():
    # Ties: everyone exits at decision 0, so decision 1's quota exceeds what is left.
    delta = np.array([[0.0] * 10, [0.5] * 10, [1.0] * 10])
    t = filtered_quantile_thresholds(delta, exit_distribution('exp', 0.9, 3))
    assert t[0] == 0.0 and t[1] == NEVER
    delta[0, 5:] = 1.0  # half exit at decision 0; decision 1 has samples enough for its quota
    t = filtered_quantile_thresholds(delta, exit_distribution('exp', 0.9, 3))
    assert simulate_exits(delta, t).min() == 0


def test_first_zero_moves_the_first_exit_away():
    q = exit_distribution('exp', 0.5, 3, skip_first=True)
    t = filtered_quantile_thresholds(CASE['delta_matrix'], q)
    assert t[0] == NEVER and simulate_exits(CASE['delta_matrix'], t).min() >= 1


def test_l2_is_a1s_rms_and_the_norm_has_its_own_name():
    a, b = np.zeros((4, 8)), np.ones((4, 8))
    assert discrepancy(a, b, 'l2') == 1.0
    assert np.isclose(discrepancy(a, b, 'l2_norm'), np.sqrt(8))


def test_shipped_packages_keep_their_l2_thresholds_as_the_norm():
    m = load_package(HERE.parent / 'models' / 'default').manifest
    metrics = {ts.name: ts.metric for ts in m.exits.threshold_sets}
    assert metrics['l2-exp-40'] == 'l2_norm' and metrics['cosine-exp-40'] == 'cosine'
