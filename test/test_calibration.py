"""Early-exit metrics and A1's filtered-quantile calibration, checked by hand."""

import math

import numpy as np
import pytest

from vla_ros.runtime.package.loader import load_package
from vla_ros.runtime.policy.calibration import CalibrationConfig, calibrate_package
from vla_ros.runtime.policy.early_exit import (
    LAST_THRESHOLD,
    calibrate_for_budget,
    discrepancy,
    exit_distribution,
    filtered_quantile_thresholds,
    simulate_exits,
)
from vla_ros.runtime.policy.observations import load_observations, save_observations
from vla_ros.runtime.policy.policy import Observation

# Three decisions, ten samples. Worked by hand with q = (0.3, 0.3, 0.4):
# decision 0: the 3rd smallest of delta[0] is 0.3 -> T0 = 0.3; samples 0, 1, 2 exit.
# decision 1: among samples 3..9 sorted by delta[1] (s4 .1, s6 .3, s3 .4, s9 .5, ...) the 3rd
#             is 0.4 -> T1 = 0.4; samples 3, 4, 6 exit. The last threshold is 1e8.
DELTA = np.array([
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    [0.05, 0.9, 0.2, 0.4, 0.1, 0.8, 0.3, 0.7, 0.6, 0.5],
    [0.0] * 10,
])


def test_filtered_quantile_matches_the_hand_worked_example():
    t = filtered_quantile_thresholds(DELTA, np.array([0.3, 0.3, 0.4]))
    np.testing.assert_allclose(t, [0.3, 0.4, LAST_THRESHOLD])
    assert simulate_exits(DELTA, t).tolist() == [0, 0, 0, 1, 1, 2, 1, 2, 2, 2]


def test_a_decision_with_no_mass_never_exits():
    t = filtered_quantile_thresholds(DELTA, np.array([0.0, 0.5, 0.5]))
    assert t[0] < 0 and simulate_exits(DELTA, t).min() == 1


def test_exit_distributions_follow_a1():
    np.testing.assert_allclose(exit_distribution('exp', 0.5, 3), np.array([0.5, 0.25, 0.125])
                               / 0.875)
    g = np.exp(-((np.arange(1, 4) - 1 - 1.0) ** 2) / 2)
    np.testing.assert_allclose(exit_distribution('gauss', 1.0, 3), g / g.sum())
    k = np.arange(1, 4)
    pdf = k ** (2.0 - 1) * np.exp(-k / 2.0) / (math.gamma(2.0) * 2.0 ** 2)
    np.testing.assert_allclose(exit_distribution('gamma', 2.0, 3), pdf / pdf.sum())
    assert exit_distribution('exp', 0.5, 3, skip_first=True)[0] == 0.0


@pytest.mark.parametrize('metric,expected', [
    ('cosine', 1.0), ('l2', 1.0), ('l2_norm', math.sqrt(2)), ('mean_abs', 1.0),
    ('max_abs', 1.0)])
def test_metrics_average_over_the_horizon(metric, expected):
    a = np.tile([1.0, 0.0], (4, 1))
    b = np.tile([0.0, 1.0], (4, 1))
    assert discrepancy(a, b, metric) == pytest.approx(expected)
    assert discrepancy(a, a, metric) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize('dist', ['exp', 'gauss', 'gamma'])
def test_budget_search_lands_near_the_budget(dist):
    rng = np.random.default_rng(0)
    delta = rng.gamma(2.0, 1.0, size=(7, 400)) * np.linspace(1.5, 0.5, 7)[:, None]
    layers = tuple(range(1, 16, 2))  # 8 exits over 16 layers
    s = calibrate_for_budget(delta, dist, 0.5, layers, 16)
    assert abs(s.compute_fraction - 0.5) < 0.1
    assert s.exit_histogram.sum() == 400 and s.exit_histogram[0] == 0


def _observations(pkg, n, seed=0):
    rng = np.random.default_rng(seed)
    return [Observation({c.name: (rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), 'rgb8')
                         for c in pkg.manifest.cameras},
                        rng.uniform(-1, 2, pkg.manifest.state.dim), 'pick up the cube', float(i))
            for i in range(n)]


def test_observation_sets_round_trip(exported, tmp_path):
    pkg = exported['evo1'][1]
    obs = _observations(pkg, 3)
    path = save_observations(tmp_path / 'obs.npz', obs)
    back = load_observations(path)
    assert len(back) == 3 and back[1].instruction == 'pick up the cube'
    np.testing.assert_array_equal(back[2].images['wrist'][0], obs[2].images['wrist'][0])


def test_a_bad_observation_file_is_a_clear_error(tmp_path):
    (tmp_path / 'x.npz').write_bytes(b'not a zip')
    with pytest.raises(ValueError, match='not an observation set'):
        load_observations(tmp_path / 'x.npz')
    np.savez(tmp_path / 'y.npz', state=np.zeros((2, 3)))
    with pytest.raises(ValueError, match='instruction'):
        load_observations(tmp_path / 'y.npz')


def test_calibrate_writes_threshold_sets_into_the_package(exported, tmp_path):
    import shutil

    shutil.copytree(exported['a1'][1].root, tmp_path / 'pkg')
    data = save_observations(tmp_path / 'obs.npz', _observations(exported['a1'][1], 12))
    cfg = CalibrationConfig(metrics=('cosine', 'l2'), distributions=('exp', 'gauss'),
                            budgets=(0.5, 1.0))
    calibrate_package(tmp_path / 'pkg', data, cfg, progress=lambda _: None)
    m = load_package(tmp_path / 'pkg').manifest  # hashes still valid
    assert len(m.exits.threshold_sets) == 8
    assert m.exits.default_threshold_set == 'cosine-exp-50'
    for ts in m.exits.threshold_sets:
        assert len(ts.values) == 2 and ts.values[-1] == LAST_THRESHOLD
        assert 0.5 <= ts.expected_compute_fraction <= 1.0
        assert ts.calibration['samples'] == 12 and ts.calibration['truncated_flow']


def test_calibrate_refuses_too_few_observations(exported, tmp_path):
    data = save_observations(tmp_path / 'obs.npz', _observations(exported['a1'][1], 3))
    with pytest.raises(ValueError, match='at least 10'):
        calibrate_package(exported['a1'][1].root, data, progress=lambda _: None)
