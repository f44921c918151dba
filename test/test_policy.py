"""Policy.infer on exported packages: modes, early exit, truncated flow, deadline, RTC."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from vla_ros.runtime.backends import load_backend
from vla_ros.runtime.package.loader import update_manifest
from vla_ros.runtime.package.manifest import ThresholdSet
from vla_ros.runtime.policy.policy import Observation, Policy, PolicyConfig


def observation(pkg, seed: int = 0, cameras=None) -> Observation:
    rng = np.random.default_rng(seed)
    names = cameras if cameras is not None else [c.name for c in pkg.manifest.cameras]
    images = {c: (rng.integers(0, 256, (40, 60, 3), dtype=np.uint8), 'rgb8') for c in names}
    return Observation(images, rng.uniform(-0.5, 1.5, pkg.manifest.state.dim),
                       'pick up the red cube', time.monotonic())


def policy(pkg, **kw) -> Policy:
    return Policy(pkg, load_backend(pkg), PolicyConfig(**kw))


def with_thresholds(pkg, values, metric='l2'):
    ts = ThresholdSet('test', metric, tuple(values), 0.5, {})
    return update_manifest(pkg, pkg.manifest.with_threshold_sets((ts,), 'test'))


@pytest.fixture
def evo1(exported, tmp_path):
    import shutil

    src = exported['evo1'][1].root
    shutil.copytree(src, tmp_path / 'evo1')
    from vla_ros.runtime.package.loader import load_package

    return load_package(tmp_path / 'evo1')


def test_full_mode_returns_a_denormalized_chunk_from_the_last_exit(exported):
    pkg = exported['a1_regression'][1]
    pol = policy(pkg, mode='full')
    obs = observation(pkg)
    chunk = pol.infer(obs)
    m = pkg.manifest
    assert chunk.actions.shape == (m.action.chunk_len, m.action.dim)
    assert chunk.exit_layer == m.exits.layers[-1] and chunk.stamp_s == obs.stamp_s
    run = pol.pipeline.start(pol.prepare(obs))
    while not run.done:
        run.advance()
    model_space = run.action()
    np.testing.assert_allclose(chunk.actions, pol.action_norm.denormalize(model_space), atol=1e-6)
    assert {'preprocess', 'vision', 'embed', 'segment', 'head', 'total'} <= set(chunk.timings_ms)


def test_fixed_mode_stops_at_the_requested_exit(exported):
    pkg = exported['vla_adapter'][1]
    chunk = policy(pkg, mode='fixed', exit_layer=2).infer(observation(pkg))
    assert chunk.exit_layer == 2 and chunk.info['compute_fraction'] == pytest.approx(0.75)


def test_fixed_mode_rejects_a_layer_that_is_not_an_exit(exported):
    with pytest.raises(ValueError, match=r'exits: \[1, 2, 3\]'):
        policy(exported['edgevla'][1], mode='fixed', exit_layer=0)


def test_without_thresholds_early_exit_runs_full_depth(exported):
    pkg = exported['edgevla'][1]
    chunk = policy(pkg, mode='early_exit').infer(observation(pkg))
    assert chunk.info['mode'] == 'full' and chunk.exit_layer == 3


def test_a_loose_threshold_exits_at_the_first_decision(evo1):
    pkg = with_thresholds(evo1, [1e6, 1e6])
    chunk = policy(pkg, mode='early_exit').infer(observation(pkg))
    # exit 1 is the reference; the first decision is taken at exit 2
    assert chunk.exit_layer == 2 and len(chunk.info['metric_values']) == 1


def test_a_negative_threshold_never_exits(evo1):
    pkg = with_thresholds(evo1, [-1.0, -1.0])
    chunk = policy(pkg, mode='early_exit').infer(observation(pkg))
    assert chunk.exit_layer == 3 and len(chunk.info['metric_values']) == 1


def test_early_exit_uses_truncated_flow_warm_started_from_the_previous_exit(evo1):
    pkg = with_thresholds(evo1, [1e6, 1e6])
    pol = policy(pkg, mode='early_exit', seed=3)
    obs = observation(pkg)
    chunk = pol.infer(obs)
    pol.rng = np.random.default_rng(3)
    noise = pol.noise()
    run = pol.pipeline.start(pol.prepare(obs))
    run.advance()
    first = run.action(noise, pkg.manifest.flow.truncated_steps)
    run.advance()
    second = run.action(first, pkg.manifest.flow.truncated_steps)
    np.testing.assert_allclose(chunk.actions, pol.action_norm.denormalize(second), atol=1e-5)


def test_a_passed_deadline_returns_the_first_exits_action(exported):
    pkg = exported['a1'][1]
    pol = policy(pkg, mode='full')
    chunk = pol.infer(observation(pkg), deadline_s=time.monotonic() - 1.0)
    assert chunk.exit_layer == pkg.manifest.exits.layers[0] and chunk.info['deadline_hit']
    assert np.all(np.isfinite(chunk.actions))


def test_a_generous_deadline_changes_nothing(exported):
    pkg = exported['a1'][1]
    pol = policy(pkg, mode='full')
    chunk = pol.infer(observation(pkg), deadline_s=time.monotonic() + 60)
    assert chunk.exit_layer == 3 and not chunk.info['deadline_hit']


def test_missing_required_camera_is_a_clear_error(exported):
    pkg = exported['evo1'][1]
    with pytest.raises(ValueError, match="lacks camera 'wrist'"):
        policy(pkg).infer(observation(pkg, cameras=['scene']))


def test_delta_actions_are_added_to_the_state(evo1):
    m = evo1.manifest
    delta_pkg = update_manifest(evo1, replace(m, action=replace(m.action, mode='delta')))
    obs = observation(delta_pkg)
    absolute = policy(evo1, mode='full').infer(obs).actions
    delta = policy(delta_pkg, mode='full').infer(obs).actions
    np.testing.assert_allclose(delta, absolute + obs.state[None, :], atol=1e-6)


def test_rtc_prefix_with_full_weight_is_kept_exactly(exported):
    pkg = exported['evo1'][1]
    pol = policy(pkg, mode='full')
    obs = observation(pkg)
    h = pkg.manifest.action.chunk_len
    prefix = np.tile(np.linspace(0.0, 1.0, pkg.manifest.action.dim), (h, 1))
    weights = np.array([1.0, 1.0] + [0.0] * (h - 2))
    pol.rng = np.random.default_rng(0)
    guided = pol.infer(obs, prefix=(prefix, weights)).actions
    pol.rng = np.random.default_rng(0)
    free = pol.infer(obs).actions
    np.testing.assert_allclose(guided[:2], prefix[:2], atol=1e-5)
    assert not np.allclose(guided[2:], free[2:], atol=1e-6)  # the rest adapts to the prefix


def test_rtc_prefix_with_zero_weight_changes_nothing(exported):
    pkg = exported['a1'][1]
    pol = policy(pkg, mode='full')
    obs = observation(pkg)
    h = pkg.manifest.action.chunk_len
    pol.rng = np.random.default_rng(0)
    guided = pol.infer(obs, prefix=(np.zeros((h, pkg.manifest.action.dim)), np.zeros(h)))
    pol.rng = np.random.default_rng(0)
    np.testing.assert_allclose(guided.actions, pol.infer(obs).actions, atol=1e-6)


def test_bad_policy_settings_name_the_field():
    with pytest.raises(ValueError, match='policy mode'):
        PolicyConfig(mode='fast')
    with pytest.raises(ValueError, match='truncated_steps'):
        PolicyConfig(truncated_steps=0)
