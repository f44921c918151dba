"""Early-exit metrics and A1's filtered-quantile calibration, checked by hand."""

import math

import numpy as np
import pytest

from vla_ros.runtime.backends import load_backend
from vla_ros.runtime.package.loader import load_package
from vla_ros.runtime.policy.calibration import CalibrationConfig, calibrate_package
from vla_ros.runtime.policy.early_exit import (
    LAST_THRESHOLD,
    calibrate,
    calibrate_for_budget,
    discrepancy,
    exit_distribution,
    filtered_quantile_thresholds,
    simulate_exits,
)
from vla_ros.runtime.policy.observations import load_observations, save_observations
from vla_ros.runtime.policy.policy import Observation, Policy, PolicyConfig

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


def test_a_decision_whose_share_is_one_sample_takes_the_smallest_delta():
    t = filtered_quantile_thresholds(DELTA, np.array([0.1, 0.5, 0.4]))
    assert t[0] == 0.1 and simulate_exits(DELTA, t)[0] == 0


def test_the_last_sample_still_running_can_stop_at_a_decision():
    # 9 of 10 stop at decision 0 (T0 = 0.9); s9 alone is left, and decision 1 takes it.
    t = filtered_quantile_thresholds(DELTA, np.array([0.9, 0.1, 0.0]))
    np.testing.assert_allclose(t[:2], [0.9, 0.5])
    assert simulate_exits(DELTA, t)[9] == 1


def test_a_sample_that_stopped_is_never_counted_again():
    # s0 and s1 stop at decision 0; their large delta at decision 1 must not bring them back
    # into decision 2's quantile, which is s3's delta alone.
    delta = np.array([[0.1, 0.2, 0.9, 0.9], [0.9, 0.9, 0.1, 0.9], [0.05, 0.05, 0.5, 0.7],
                      [0.0] * 4])
    t = filtered_quantile_thresholds(delta, np.array([0.5, 0.25, 0.25, 0.0]))
    np.testing.assert_allclose(t[:3], [0.2, 0.1, 0.7])
    assert simulate_exits(delta, t).tolist() == [0, 0, 1, 2]


def test_bad_metric_distribution_or_q_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="metric 'magic' is not one of"):
        discrepancy(np.ones((2, 2)), np.ones((2, 2)), 'magic')
    with pytest.raises(ValueError, match="distribution 'magic' is not one of"):
        exit_distribution('magic', 0.5, 3)
    with pytest.raises(ValueError, match=r'q has shape \(2,\), expected \(3,\)'):
        filtered_quantile_thresholds(DELTA, np.array([0.5, 0.5]))


def test_a_distribution_with_no_mass_is_refused():
    with pytest.raises(ValueError, match='puts no mass on any exit'):
        exit_distribution('exp', 0.0, 3)


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


def _by_hand(a, b, metric):
    """The metric of each step (over the action vector), averaged over the steps."""
    per = []
    for x, y in zip(a, b, strict=True):
        d = [u - v for u, v in zip(x, y, strict=True)]
        if metric == 'cosine':
            dot = sum(u * v for u, v in zip(x, y, strict=True))
            per.append(1 - dot / (math.hypot(*x) * math.hypot(*y)))
        elif metric == 'l2':  # A1's L2: the root mean square of the difference
            per.append(math.sqrt(sum(u * u for u in d) / len(d)))
        elif metric == 'l2_norm':
            per.append(math.hypot(*d))
        elif metric == 'mean_abs':
            per.append(sum(abs(u) for u in d) / len(d))
        else:
            per.append(max(abs(u) for u in d))
    return sum(per) / len(per)


@pytest.mark.parametrize('metric', ['cosine', 'l2', 'l2_norm', 'mean_abs', 'max_abs'])
def test_metrics_of_a_batch_of_chunks_are_each_chunks_own(metric):
    # (2 chunks, 3 steps, 2 dims), vectors of different lengths: a reduction over the wrong
    # axis or a wrong normalization shows.
    a = np.array([[[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [2.0, 0.0], [0.5, -1.0]]])
    b = np.array([[[4.0, 3.0], [1.0, 1.0], [0.0, 1.0]], [[1.0, -1.0], [0.0, 3.0], [0.0, -2.0]]])
    got = discrepancy(a, b, metric)
    assert got.shape == (2,)
    np.testing.assert_allclose(got, [_by_hand(a[0], b[0], metric),
                                     _by_hand(a[1], b[1], metric)], rtol=1e-12)


@pytest.mark.parametrize('which', ['a', 'b'])
def test_metrics_compute_in_float64_whatever_the_input_dtype(which):
    # 1 - cos = 5e-9 for these: float32 arithmetic rounds the norm to 1 and returns 0.
    a = np.array([[1.0, 1e-4]])
    b = np.array([[1.0, 0.0]])
    args = (a.astype(np.float32), b) if which == 'a' else (b, a.astype(np.float32))
    assert discrepancy(*args, 'cosine') == pytest.approx(1 - 1 / math.sqrt(1 + 1e-8),
                                                         rel=1e-3)


def test_a_threshold_set_reports_the_hand_worked_exits_and_compute():
    # exp with ratio 1 is q = (1/3, 1/3, 1/3): the same thresholds as the hand-worked q above
    # (3 of 10 samples stop at each decision). Exits after layers 0, 1, 3, 5 of 6.
    s = calibrate(DELTA, 'exp', 1.0, (0, 1, 3, 5), 6)
    assert s.distribution == 'exp' and s.ratio == 1.0
    np.testing.assert_allclose(s.thresholds, [0.3, 0.4, LAST_THRESHOLD])
    assert s.exit_histogram.tolist() == [0, 3, 3, 4]  # the reference exit never stops
    assert s.compute_fraction == pytest.approx((3 * 2 + 3 * 4 + 4 * 6) / 10 / 6)


def test_every_exit_is_counted_even_when_all_stop_at_the_first_decision():
    s = calibrate(np.full((3, 10), 0.2), 'exp', 1.0, (0, 1, 3, 5), 6)  # ties: all stop
    assert s.exit_histogram.tolist() == [0, 10, 0, 0]
    assert s.compute_fraction == pytest.approx(2 / 6)


# Low and high budgets need the ends of each search bracket (gauss centre below 1 or near
# the last decision, gamma shape below 1).
@pytest.mark.parametrize('dist,budget', [('exp', 0.5), ('gauss', 0.5), ('gamma', 0.5),
                                         ('gauss', 0.3), ('gauss', 0.95), ('exp', 0.95),
                                         ('gamma', 0.34), ('gamma', 0.8)])
def test_budget_search_lands_near_the_budget(dist, budget):
    rng = np.random.default_rng(0)
    delta = rng.gamma(2.0, 1.0, size=(7, 400)) * np.linspace(1.5, 0.5, 7)[:, None]
    layers = tuple(range(1, 16, 2))  # 8 exits over 16 layers
    s = calibrate_for_budget(delta, dist, budget, layers, 16)
    assert abs(s.compute_fraction - budget) < 0.01  # 400 samples: fine steps
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


def _a1_q(distribution: str, ratio: float, num_decisions: int) -> list[float]:
    """A1's exit distribution over decisions k = 1..K, from its definition."""
    if distribution == 'exp':
        raw = [ratio ** k for k in range(1, num_decisions + 1)]
    else:  # gauss
        raw = [math.exp(-((k - 1 - ratio) ** 2) / 2) for k in range(1, num_decisions + 1)]
    return [r / sum(raw) for r in raw]


def _a1_thresholds(delta: list[list[float]], q: list[float]) -> list[float | None]:
    """A1 `set_threshold`, written from the rule: walk the decisions in order; among the samples
    still running, the floor(N q_k)-th smallest delta is T_k and every one at or below it
    stops; None where nobody stops; the last decision always stops (1e8)."""
    n = len(delta[0])
    running = list(range(n))
    out: list[float | None] = []
    for k in range(len(delta) - 1):
        count = math.floor(n * q[k])
        values = sorted(delta[k][i] for i in running)
        if count == 0 or not values:
            out.append(None)
            continue
        t = values[min(count, len(values)) - 1]
        out.append(t)
        running = [i for i in running if delta[k][i] > t]
    return out + [1e8]


def _a1_delta(policy, observations, metric: str) -> list[list[float]]:
    """delta[k][n]: the metric between exits k and k + 1 on the named action dimensions,
    averaged over the horizon."""
    dim = policy.m.action.dim
    rows = []
    for obs in observations:
        acts = [np.asarray(a, np.float64)[:, :dim]
                for a in policy.actions_at_all_exits(policy.prepare(obs), truncated=True)]
        per = []
        for a, b in zip(acts, acts[1:], strict=False):
            if metric == 'cosine':
                cos = [float(x @ y) / (np.linalg.norm(x) * np.linalg.norm(y))
                       for x, y in zip(a, b, strict=True)]
                per.append(sum(1 - c for c in cos) / len(cos))
            else:  # l2: A1's RMS over the action vector
                per.append(float(np.mean(np.sqrt(np.mean((a - b) ** 2, axis=-1)))))
        rows.append(per)
    return [list(col) for col in zip(*rows, strict=True)]


def _fraction(delta, thresholds, layers, num_layers) -> float:
    """Mean backbone fraction: decision k sits at exit k + 1; a sample stops at the first
    decision whose delta is at or below its threshold."""
    used = []
    for i in range(len(delta[0])):
        k = next(k for k, t in enumerate(thresholds) if t is not None and delta[k][i] <= t)
        used.append((layers[k + 1] + 1) / num_layers)
    return sum(used) / len(used)


def test_skip_first_reaches_the_thresholds_through_the_budget_search():
    # A1's q_1 = 0: the first decision never stops a sample, whatever the budget found.
    from vla_ros.runtime.policy.early_exit import NEVER

    delta = np.random.default_rng(0).uniform(0.0, 1.0, (3, 60))
    s = calibrate_for_budget(delta, 'exp', 0.8, (0, 1, 2, 3), 4, skip_first=True)
    assert s.thresholds[0] == NEVER and s.exit_histogram[1] == 0
    again = calibrate(delta, 'exp', s.ratio, (0, 1, 2, 3), 4, skip_first=True)
    np.testing.assert_array_equal(again.thresholds, s.thresholds)
    assert calibrate(delta, 'exp', s.ratio, (0, 1, 2, 3), 4).thresholds[0] != NEVER


# Exits after layers 1, 2, 3 of 4: compute is 0.75 (stop at the decision) or 1.0; these
# budgets need 60% and 40% of the samples to stop early.
BUDGETS = (0.85, 0.9)
HELD_OUT_TOLERANCE = 0.05


@pytest.fixture  # per test: each test that reads a calibrated set runs the calibration
def calibrated(exported, tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp('calibrated')
    src = exported['a1'][1]
    shutil.copytree(src.root, root / 'pkg')
    data = save_observations(root / 'obs.npz', _observations(src, 40, seed=0))
    cfg = CalibrationConfig(metrics=('cosine', 'l2'), distributions=('exp', 'gauss'),
                            budgets=BUDGETS)
    calibrate_package(root / 'pkg', data, cfg, progress=lambda _: None)
    return load_package(root / 'pkg'), load_observations(data)  # hashes still valid


def test_calibrate_writes_one_named_set_per_metric_distribution_and_budget(calibrated):
    m = calibrated[0].manifest
    assert sorted(ts.name for ts in m.exits.threshold_sets) == sorted(
        f'{k}-{d}-{round(b * 100)}' for k in ('cosine', 'l2') for d in ('exp', 'gauss')
        for b in BUDGETS)
    assert m.exits.default_threshold_set == 'cosine-exp-85'  # cosine, exp, nearest 0.5
    for ts in m.exits.threshold_sets:
        assert ts.calibration['samples'] == 40 and ts.calibration['truncated_flow']


@pytest.mark.parametrize('metric', ['cosine', 'l2'])
def test_thresholds_are_a1s_filtered_quantiles_at_the_recorded_ratio(calibrated, metric):
    pkg, observations = calibrated
    m = pkg.manifest
    policy = Policy(pkg, load_backend(pkg), PolicyConfig(mode='full', seed=0))
    delta = _a1_delta(policy, observations, metric)
    for ts in (t for t in m.exits.threshold_sets if t.metric == metric):
        cal = ts.calibration
        ref = _a1_thresholds(delta, _a1_q(cal['distribution'], cal['ratio'], len(delta)))
        assert len(ts.values) == len(ref) == len(m.exits.layers) - 1, ts.name
        for got, want in zip(ts.values, ref, strict=True):
            if want is None:
                assert got < 0, ts.name  # below every delta: nobody stops there
            else:
                assert got == pytest.approx(want, rel=1e-6, abs=1e-9), ts.name
        cf = _fraction(delta, ref, m.exits.layers, m.exits.num_layers)
        assert ts.expected_compute_fraction == pytest.approx(cf), ts.name
        # One sample moves the fraction by 0.25 / N: the ratio found is the budget's.
        assert abs(cf - cal['budget']) <= 0.25 / len(observations) + 1e-9, ts.name


@pytest.mark.parametrize('name', ['cosine-exp-85', 'cosine-gauss-90', 'l2-exp-90'])
def test_a_calibrated_set_meets_its_budget_on_held_out_observations(calibrated, name):
    pkg = calibrated[0]
    ts = next(t for t in pkg.manifest.exits.threshold_sets if t.name == name)
    policy = Policy(pkg, load_backend(pkg), PolicyConfig(mode='early_exit', threshold_set=name,
                                                         seed=0))
    held_out = _observations(pkg, 40, seed=1)
    used = [policy.infer(obs).info['compute_fraction'] for obs in held_out]
    assert abs(np.mean(used) - ts.calibration['budget']) <= HELD_OUT_TOLERANCE, used


def test_calibrate_refuses_too_few_observations(exported, tmp_path):
    data = save_observations(tmp_path / 'obs.npz', _observations(exported['a1'][1], 3))
    with pytest.raises(ValueError, match='at least 10'):
        calibrate_package(exported['a1'][1].root, data, progress=lambda _: None)
