"""Deadline scheduling decided from measured costs, with injected clocks and samples (no
timing asserts)."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.runtime.backends import load_backend
from vla_ros.runtime.policy.deadline import CostModel, DeadlineConfig
from vla_ros.runtime.policy.policy import Policy, PolicyConfig

FLOW = (2, '')  # two Euler steps, no guidance


def model(depths=(1, 1, 1, 1), window=32) -> CostModel:
    return CostModel((2, 2, 2, 2), depths, DeadlineConfig(quantile=0.9, window=window))


def test_a_cost_is_estimated_by_a_high_quantile_of_its_samples():
    c = model()
    for ms in range(1, 11):  # 1 .. 10 ms
        c.record_segment(0, ms)
    assert c.segment_ms(0) == pytest.approx(np.quantile(np.arange(1, 11), 0.9))
    assert c.segment_ms(0) > np.mean(np.arange(1, 11))


def test_old_samples_leave_the_window():
    c = model(window=4)
    for ms in (100, 100, 100, 100, 5, 5, 5, 5):
        c.record_segment(0, ms)
    assert c.segment_ms(0) == pytest.approx(5.0)


def test_an_unmeasured_segment_is_scaled_from_a_measured_one_by_its_layers():
    c = CostModel((1, 3), (1, 1))
    c.record_segment(0, 10.0)
    assert c.segment_ms(1) == pytest.approx(30.0)


def test_one_measured_head_is_estimated_at_its_measured_cost():
    c = model()
    c.record_head(0, FLOW, 40.0)
    assert c.head_ms(0, FLOW) == pytest.approx(40.0)


def test_an_unmeasured_exit_head_takes_the_same_kind_at_another_exit():
    c = model()
    c.record_head(0, FLOW, 40.0)
    assert c.head_ms(3, FLOW) == pytest.approx(40.0)


def test_a_head_that_grows_with_depth_is_scaled_by_it():
    c = model(depths=(2, 4, 6, 8))  # A1's expert: layers 0..exit
    c.record_head(0, FLOW, 10.0)
    assert c.head_ms(3, FLOW) == pytest.approx(40.0)


def test_a_full_solve_never_makes_a_truncated_head_look_free_or_cheaper():
    c = model()
    c.record_head(3, (10, ''), 100.0)  # full mode measured only the last exit's 10 steps
    assert c.head_ms(1, FLOW) == pytest.approx(100.0)
    assert c.head_ms(1, (20, '')) == pytest.approx(200.0)


def test_nothing_measured_is_no_estimate_and_costs_nothing():
    c = model()
    assert c.segment_ms(1) is None and c.head_ms(1, FLOW) is None
    assert c.exit_ms(1, FLOW) == 0.0


def test_stops_when_the_next_segment_and_its_head_would_end_past_the_deadline():
    c = model()
    c.record_segment(1, 30.0)
    c.record_head(1, FLOW, 20.0)
    assert not c.should_stop(10.0, 10.051, 1, FLOW)
    assert c.should_stop(10.0, 10.049, 1, FLOW)


def test_the_head_counts_in_the_decision():
    c = model()
    c.record_segment(1, 30.0)
    assert not c.should_stop(10.0, 10.040, 1, FLOW)
    c.record_head(1, FLOW, 20.0)
    assert c.should_stop(10.0, 10.040, 1, FLOW)


def test_bad_deadline_settings_name_the_field():
    with pytest.raises(ValueError, match='quantile'):
        DeadlineConfig(quantile=0.0)
    with pytest.raises(ValueError, match='window'):
        DeadlineConfig(window=0)


# --- the policy's decision, with an injected clock ----------------------------------------------


@pytest.fixture
def evo1(exported):
    pkg = exported['evo1'][1]
    return pkg, Policy(pkg, load_backend(pkg), PolicyConfig(mode='full'))


def _obs(pkg):
    from test_policy import observation

    return observation(pkg)


def _inject(pol, k: int, segment_ms: float, head_ms: float, kind=FLOW) -> None:
    for _ in range(pol.costs.config.window):
        pol.costs.record_segment(k, segment_ms)
        pol.costs.record_head(k, kind, head_ms)


def test_the_policy_stops_before_an_exit_its_estimates_say_would_be_late(evo1):
    pkg, pol = evo1
    _inject(pol, 1, 500.0, 500.0)  # exit 1 "costs" 1 s
    pol.clock = lambda: 100.0
    chunk = pol.infer(_obs(pkg), deadline_s=100.9)
    assert chunk.info['deadline_hit'] and chunk.exit_layer == pkg.manifest.exits.layers[0]


def test_the_policy_goes_on_while_its_estimates_fit(evo1):
    pkg, pol = evo1
    for k in range(len(pol.exits)):
        _inject(pol, k, 1.0, 1.0)
    pol.clock = lambda: 100.0
    chunk = pol.infer(_obs(pkg), deadline_s=100.9)
    assert not chunk.info['deadline_hit'] and chunk.exit_layer == pkg.manifest.exits.layers[-1]


def test_a_fresh_policy_decides_from_its_first_exit_of_the_same_call(evo1):
    pkg, pol = evo1
    assert pol.costs.segment_ms(0) is None
    pol.clock = lambda: 100.0
    # Any measured cost exceeds a nanosecond of budget: the first exit's own costs stop it.
    chunk = pol.infer(_obs(pkg), deadline_s=100.0 + 1e-9)
    assert chunk.info['deadline_hit'] and chunk.exit_layer == pkg.manifest.exits.layers[0]
    assert pol.costs.segment_ms(0) > 0 and pol.costs.head_ms(0, FLOW) > 0


def test_full_mode_runs_teach_the_deadline_the_exit_costs(evo1):
    pkg, pol = evo1
    pol.pipeline.chains = {}  # segments one by one, as a package without a chain runs them
    pol.infer(_obs(pkg))  # full mode: segments at every exit, one 10-step head at the last
    assert all(s is not None for s in pol.costs.segment_estimates())
    assert all(h is not None and h > 0 for h in pol.costs.head_estimates(FLOW))


def test_a_chained_run_is_not_taken_for_one_segments_cost(evo1):
    pkg, pol = evo1
    assert pol.pipeline.chains  # the tiny package has a chain of every segment
    pol.infer(_obs(pkg))
    assert all(s is None for s in pol.costs.segment_estimates())
