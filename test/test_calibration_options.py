"""`vla-ros calibrate` options against an independent computation of A1's rule: full solves
instead of truncated flow, one sample per horizon step, the metric over every model action
dimension; its progress lines and its choice of the default set."""

from __future__ import annotations

import numpy as np
import pytest
from test_calibration import _a1_q, _a1_thresholds, _observations

from vla_ros.runtime.backends import load_backend
from vla_ros.runtime.package.loader import load_package
from vla_ros.runtime.policy.calibration import CalibrationConfig, calibrate_package
from vla_ros.runtime.policy.observations import save_observations
from vla_ros.runtime.policy.policy import Policy, PolicyConfig

SAMPLES = 20


@pytest.fixture
def a1_copy(exported, tmp_path):
    import shutil

    src = exported['a1'][1]
    shutil.copytree(src.root, tmp_path / 'pkg')
    data = save_observations(tmp_path / 'obs.npz', _observations(src, SAMPLES, seed=3))
    return tmp_path / 'pkg', data


def _reference_delta(pkg, data_obs, metric: str, truncated: bool, per_step: bool,
                     all_dims: bool, seed: int = 0) -> list[list[float]]:
    """delta[k][n] from the exits' actions: 1 - cosine or the RMS difference of each step's
    vector, over the named or all model dimensions; one sample per observation (the mean over
    the horizon) or one per observation and step."""
    policy = Policy(pkg, load_backend(pkg), PolicyConfig(mode='full', seed=seed))
    dims = pkg.manifest.action.model_dim if all_dims else pkg.manifest.action.dim
    columns = []
    for obs in data_obs:
        acts = [np.asarray(a, np.float64)[:, :dims]
                for a in policy.actions_at_all_exits(policy.prepare(obs), truncated=truncated)]
        per_pair = []
        for a, b in zip(acts, acts[1:], strict=False):
            if metric == 'cosine':
                v = [1.0 - float(x @ y) / (np.linalg.norm(x) * np.linalg.norm(y))
                     for x, y in zip(a, b, strict=True)]
            else:
                v = [float(np.sqrt(np.mean((x - y) ** 2))) for x, y in zip(a, b, strict=True)]
            per_pair.append(v if per_step else [sum(v) / len(v)])
        columns.extend(zip(*per_pair, strict=True))  # one column per sample
    return [list(row) for row in zip(*columns, strict=True)]


@pytest.mark.parametrize('options', [{'truncated': False}, {'per_step': True},
                                     {'all_dims': True}], ids=lambda o: next(iter(o)))
def test_each_option_changes_the_deltas_as_a1_defines_them(a1_copy, options):
    root, data = a1_copy
    cfg = CalibrationConfig(metrics=('cosine', 'l2'), distributions=('exp',), budgets=(0.85,),
                            **options)
    calibrate_package(root, data, cfg, progress=lambda _: None)
    pkg = load_package(root)
    from vla_ros.runtime.policy.observations import load_observations
    observations = load_observations(data)
    truncated = options.get('truncated', True)
    per_step, all_dims = options.get('per_step', False), options.get('all_dims', False)
    for ts in pkg.manifest.exits.threshold_sets:
        delta = _reference_delta(pkg, observations, ts.metric, truncated, per_step, all_dims)
        assert len(delta[0]) == SAMPLES * (pkg.manifest.action.chunk_len if per_step else 1)
        cal = ts.calibration
        ref = _a1_thresholds(delta, _a1_q(cal['distribution'], cal['ratio'], len(delta)))
        for got, want in zip(ts.values, ref, strict=True):
            if want is None:
                assert got < 0, ts.name
            else:
                assert got == pytest.approx(want, rel=1e-6, abs=1e-9), ts.name
        assert ts.dims == ('all' if all_dims else 'named')
        assert (cal['per_step'], cal['truncated_flow'], cal['samples']) == (
            per_step, truncated, SAMPLES)
        assert ('l2' in cal) == (ts.metric == 'l2')


@pytest.mark.parametrize('count', [15, 30])
def test_calibrate_reports_progress_every_tenth_of_the_observations(exported, tmp_path, count):
    import shutil

    src = exported['a1'][1]
    shutil.copytree(src.root, tmp_path / 'pkg')
    data = save_observations(tmp_path / 'obs.npz', _observations(src, count, seed=3))
    lines: list[str] = []
    calibrate_package(tmp_path / 'pkg', data, CalibrationConfig(
        metrics=('l2',), distributions=('exp',), budgets=(0.9,)), progress=lines.append)
    every = {15: 1, 30: 3}[count]  # a tenth, rounded down, at least one
    assert lines[0] == f'calibrate: {count} observations, 3 exits, truncated flow'
    assert lines[1:-1] == [f'calibrate: {i}/{count} observations'
                           for i in range(every, count + 1, every)]
    assert lines[-1] == (f'calibrate: wrote 1 threshold sets to {tmp_path / "pkg"}, '
                         'default l2-exp-90')


def test_the_default_set_is_cosine_exp_nearest_half_whatever_the_order(a1_copy):
    root, data = a1_copy
    cfg = CalibrationConfig(metrics=('l2', 'cosine'), distributions=('gauss', 'exp'),
                            budgets=(0.25, 0.5, 0.75))
    calibrate_package(root, data, cfg, progress=lambda _: None)
    assert load_package(root).manifest.exits.default_threshold_set == 'cosine-exp-50'


def test_without_exp_the_default_is_the_metrics_set_nearest_half(a1_copy):
    root, data = a1_copy
    cfg = CalibrationConfig(metrics=('l2',), distributions=('gauss',), budgets=(0.9, 0.6))
    calibrate_package(root, data, cfg, progress=lambda _: None)
    assert load_package(root).manifest.exits.default_threshold_set == 'l2-gauss-60'


def test_calibration_settings_are_checked_with_their_reasons():
    with pytest.raises(ValueError, match=r"^bad calibration settings \['tri'\]: metrics from"):
        CalibrationConfig(distributions=('exp', 'tri'))
    for budgets in ((0.0,), (1.5,)):
        with pytest.raises(ValueError, match=rf"^bad calibration settings \['{budgets[0]}'\]"):
            CalibrationConfig(metrics=('cosine',), budgets=budgets)
    with pytest.raises(ValueError, match=r"settings \['x', 'tri', '2'\]"):
        CalibrationConfig(metrics=('x',), distributions=('tri',), budgets=(2,))
    for empty in ({'metrics': ()}, {'distributions': ()}, {'budgets': ()}):
        with pytest.raises(ValueError, match=r'^bad calibration settings \[\]'):
            CalibrationConfig(**empty)
    assert CalibrationConfig(budgets=(1.0,)).budgets == (1.0,)


def test_calibrate_refuses_a_package_with_fewer_than_three_exits(tiny_package, tmp_path):
    data = save_observations(tmp_path / 'obs.npz',
                             _observations(load_package(tiny_package), 10))
    with pytest.raises(ValueError, match=r'^tiny has 2 exits; early exit needs at least 3 \(a '
                                         r'reference exit, one decision, the last\)$'):
        calibrate_package(tiny_package, data, progress=lambda _: None)


def test_calibrate_takes_ten_observations_and_checks_the_first_ones_cameras(a1_copy, tmp_path):
    root, _ = a1_copy
    src = load_package(root)
    ten = save_observations(tmp_path / 'ten.npz', _observations(src, 10))
    calibrate_package(root, ten, CalibrationConfig(metrics=('l2',), distributions=('exp',),
                                                   budgets=(0.9,)), progress=lambda _: None)
    obs = _observations(src, 12)
    name = src.manifest.cameras[0].name
    del obs[0].images[name]
    partial = save_observations(tmp_path / 'partial.npz', obs)
    with pytest.raises(ValueError, match=rf"lacks the cameras \['{name}'\] the model needs$"):
        calibrate_package(root, partial, progress=lambda _: None)


def test_calibrate_draws_the_flow_noise_from_its_seed(a1_copy):
    root, data = a1_copy
    cfg = CalibrationConfig(metrics=('l2',), distributions=('exp',), budgets=(0.9,), seed=7)
    calibrate_package(root, data, cfg, progress=lambda _: None)
    pkg = load_package(root)
    from vla_ros.runtime.policy.observations import load_observations
    ts = pkg.manifest.exits.threshold_sets[0]
    delta = _reference_delta(pkg, load_observations(data), 'l2', True, False, False, seed=7)
    ref = _a1_thresholds(delta, _a1_q('exp', ts.calibration['ratio'], len(delta)))
    assert [v for v, r in zip(ts.values, ref, strict=True) if r is not None] == pytest.approx(
        [r for r in ref if r is not None], rel=1e-6)


def test_each_set_records_how_it_was_made(a1_copy):
    import hashlib

    from vla_ros.runtime.policy.early_exit import NEVER, simulate_exits
    from vla_ros.runtime.policy.observations import load_observations

    root, data = a1_copy
    lines: list[str] = []
    cfg = CalibrationConfig(metrics=('l2',), distributions=('exp',), budgets=(0.9,),
                            truncated=False, skip_first=True)
    calibrate_package(root, data, cfg, progress=lines.append)
    assert lines[0] == f'calibrate: {SAMPLES} observations, 3 exits, full solves'
    pkg = load_package(root)
    ts = pkg.manifest.exits.threshold_sets[0]
    delta = np.array(_reference_delta(pkg, load_observations(data), 'l2', False, False, False))
    cal = ts.calibration
    assert ts.values[0] == NEVER  # skip_first: the first decision never stops a sample
    stops = simulate_exits(delta, np.array(ts.values))
    assert cal['exit_histogram'] == np.bincount(stops + 1, minlength=3).tolist()
    assert cal['delta_median'] == pytest.approx(np.median(delta, axis=1).tolist())
    assert cal['data_sha256'] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert (cal['method'], cal['skip_first'], cal['truncated_flow']) == (
        'A1 filtered quantile', True, False)
