"""The chunking rules at their edges: RTC's schedules, the merge strategies' settings and
boundaries, cubic tangents, the request and delay rules. Each test pins one behaviour a
silent change would break (found by `make mutation ARGS=chunking`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vla_ros.runtime.chunking.action_queue import ActionQueue
from vla_ros.runtime.chunking.chunk import ActionChunk
from vla_ros.runtime.chunking.merge import (
    MergeInput,
    RTCBlend,
    TemporalEnsemble,
    WeightedAverage,
    make_strategy,
    rtc_prefix_weights,
)
from vla_ros.runtime.chunking.scheduling import LatencyEstimator, RequestPolicy
from vla_ros.runtime.chunking.trajectory import Trajectory

DT = 0.05


def traj(times, values, interpolation: str = 'linear') -> Trajectory:
    v = np.asarray(values, dtype=float)
    return Trajectory(np.asarray(times, float), v if v.ndim == 2 else v[:, None], interpolation)


def grid(start: float, values, interpolation: str = 'linear') -> Trajectory:
    return traj(start + DT * np.arange(len(values)), values, interpolation)


# --- RTC's prefix weights ------------------------------------------------------------------


def test_ones_schedule_keeps_the_old_chunk_until_the_execution_horizon():
    # H = 8, s = 3: W = 1 before index H - s = 5, 0 from there on, at fractional indices too.
    w = rtc_prefix_weights(np.array([0.0, 4.5, 4.99, 5.0, 7.0]), 2, 8, 3, schedule='ones')
    assert w.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_zeros_schedule_keeps_the_old_chunk_only_over_the_delay():
    w = rtc_prefix_weights(np.array([0.0, 1.5, 2.0, 3.0, 7.0]), 2, 8, 3, schedule='zeros')
    assert w.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_an_unknown_rtc_schedule_is_refused_by_name():
    with pytest.raises(ValueError, match="'cosine' is not one of"):
        rtc_prefix_weights(np.arange(4), 1, 4, 2, schedule='cosine')
    with pytest.raises(ValueError, match="'cosine' is not one of"):
        RTCBlend(schedule='cosine')


def test_rtc_blend_passes_its_schedule_on():
    idx = np.arange(8.0)
    for schedule in ('linear', 'ones', 'zeros'):
        np.testing.assert_array_equal(RTCBlend(schedule, execution_horizon=3).weights(idx, 2, 8),
                                      rtc_prefix_weights(idx, 2, 8, 3, schedule))


def test_rtc_blend_execution_horizon_of_one_is_allowed_and_zero_refused():
    assert RTCBlend(execution_horizon=1).execution_horizon == 1
    with pytest.raises(ValueError, match='execution_horizon 0 must be >= 1'):
        RTCBlend(execution_horizon=0)


def test_a_long_delay_caps_the_execution_horizon_at_h_minus_d():
    # H = 8, d = 5.5: s = min(max(4, 6), 8 - 6) = 2, so the soft region is [5.5, 6): index
    # 5.75 keeps a small positive weight (c = 0.25 / 1.5), and nothing from 6 on.
    w = RTCBlend().weights(np.array([5.0, 5.75, 6.0]), 5.5, 8)
    c = 0.25 / 1.5
    assert w[0] == 1.0 and w[2] == 0.0
    assert w[1] == pytest.approx(c * math.expm1(c) / (math.e - 1.0))


def test_describe_names_each_strategys_settings():
    assert RTCBlend().describe() == 'rtc_blend (exp, s=H/2)'
    assert RTCBlend('linear', 4).describe() == 'rtc_blend (linear, s=4)'
    assert WeightedAverage('conservative').describe() == 'conservative (old 0.7 / new 0.3)'
    assert WeightedAverage('mine', 0.25).describe() == 'mine (old 0.25 / new 0.75)'
    assert make_strategy('temporal_ensemble', k=0.5).describe() == 'temporal_ensemble (k=0.5)'


# --- weighted average ----------------------------------------------------------------------


def test_weighted_average_defaults_to_lerobots_preset():
    w = WeightedAverage()
    assert (w.name, w.old_weight) == ('weighted_average', 0.3)


def test_weighted_average_accepts_the_ends_of_its_range_only():
    assert WeightedAverage('x', 0.0).old_weight == 0.0
    assert WeightedAverage('x', 1.0).old_weight == 1.0
    with pytest.raises(ValueError, match=r'old_weight 1.5 is outside \[0, 1\]'):
        WeightedAverage('x', 1.5)
    with pytest.raises(ValueError, match=r"preset 'mean' is not one of \['weighted_average'"):
        WeightedAverage('mean')


@pytest.mark.parametrize('strategy', [WeightedAverage('average'), RTCBlend(),
                                      TemporalEnsemble(), make_strategy('replace')])
def test_every_merge_keeps_the_chunks_interpolation(strategy):
    old = grid(0.0, np.linspace(0.0, 1.0, 10), 'cubic')
    new = grid(0.1, np.linspace(0.2, 1.5, 10), 'cubic')
    out = strategy.merge(MergeInput(now=0.12, new=new, new_stamp_s=0.1, dt_s=DT, horizon=10,
                                    old=old, live=(old,)))
    assert out.interpolation == 'cubic'


# --- temporal ensemble ---------------------------------------------------------------------


def test_ensemble_keeps_every_knot_from_one_step_after_now():
    new = grid(0.0, np.arange(10.0))
    out = TemporalEnsemble().merge(MergeInput(now=0.0, new=new, new_stamp_s=0.0, dt_s=DT,
                                              horizon=10, old=None, live=()))
    np.testing.assert_allclose(out.times, new.times)


def test_ensemble_averages_only_the_chunks_that_cover_a_knot():
    # The old chunk ends at 0.2; the new one runs to 0.45. From 0.25 on the new one alone.
    old, new = grid(0.0, [1.0] * 5), grid(0.05, [3.0] * 9)
    out = TemporalEnsemble(k=0.0).merge(MergeInput(now=0.05, new=new, new_stamp_s=0.05, dt_s=DT,
                                                   horizon=9, old=old, live=(old,)))
    np.testing.assert_allclose(out.sample(np.array([0.1, 0.2]))[0][:, 0], [2.0, 2.0])
    np.testing.assert_allclose(out.sample(np.array([0.25, 0.45]))[0][:, 0], [3.0, 3.0])


def test_ensemble_goes_on_past_a_chunk_that_no_longer_covers_any_knot():
    ended, old, new = grid(0.0, [9.0, 9.0]), grid(0.0, [1.0] * 10), grid(0.1, [3.0] * 10)
    out = TemporalEnsemble(k=0.0).merge(MergeInput(now=0.1, new=new, new_stamp_s=0.1, dt_s=DT,
                                                   horizon=10, old=old, live=(ended, old)))
    assert out.at(0.2)[0] == pytest.approx(2.0)  # old and new, not the new one alone


def test_ensemble_knots_before_the_new_chunk_come_from_the_chunks_covering_them():
    # Without latency compensation the new chunk may start after now: the old chunk alone
    # covers the knots before it, and a knot nobody covers takes the new chunk's first value.
    old, new = grid(0.0, [1.0] * 10), grid(0.2, [3.0] * 10)
    m = MergeInput(now=0.1, new=new, new_stamp_s=0.2, dt_s=DT, horizon=10, old=old,
                   live=(old,))
    out = TemporalEnsemble(k=0.0).merge(m)
    assert out.at(0.1)[0] == pytest.approx(1.0) and out.at(0.15)[0] == pytest.approx(1.0)
    alone = TemporalEnsemble().merge(MergeInput(now=0.1, new=new, new_stamp_s=0.2, dt_s=DT,
                                                horizon=10, old=None, live=()))
    assert alone.at(0.1)[0] == 3.0


def test_temporal_ensemble_k_must_be_finite():
    with pytest.raises(ValueError, match='k nan must be finite'):
        TemporalEnsemble(k=float('nan'))


# --- rtc_blend at the old plan's end -------------------------------------------------------


def test_rtc_blend_blends_the_knot_the_old_plan_ends_on():
    # H = 10, s = 5, d = 1: index 4 of the new chunk (time 0.2, where the old plan ends) lies
    # in the soft region and keeps part of the old plan.
    old, new = grid(0.0, [1.0] * 5), grid(0.0, [3.0] * 10)
    out = RTCBlend('linear').merge(MergeInput(now=0.0, new=new, new_stamp_s=0.0, dt_s=DT,
                                              horizon=10, old=old, live=()))
    w = rtc_prefix_weights(np.array([4.0]), 1, 10, 5, 'linear')[0]
    assert 0 < w < 1
    assert out.at(0.2)[0] == pytest.approx(w * 1.0 + (1 - w) * 3.0)
    assert out.at(0.25)[0] == pytest.approx(3.0)


# --- trajectories --------------------------------------------------------------------------


@pytest.mark.parametrize('n', [2, 3, 5])
def test_cubic_reproduces_a_straight_line_anywhere_in_time(n):
    # Catmull-Rom tangents of points on a line are its slope, at the ends too; a start far
    # from t = 0 catches a tangent divided by a sum of times.
    t = 100.0 + 0.1 * np.arange(n)
    tr = traj(t, 2.0 * t - 5.0, 'cubic')
    q = np.linspace(t[0], t[-1], 17)
    pos, vel = tr.sample(q)
    np.testing.assert_allclose(pos[:, 0], 2.0 * q - 5.0, atol=1e-9)
    np.testing.assert_allclose(vel[:, 0], 2.0, atol=1e-9)


def test_after_keeps_knots_past_the_default_gap():
    tr = grid(0.0, [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(tr.after(0.03).times, [0.03, 0.05, 0.1, 0.15])


def test_after_at_a_knot_with_no_gap_replaces_that_knot():
    tr = grid(0.0, [0.0, 1.0, 2.0, 3.0], 'cubic')
    out = tr.after(0.05, min_gap_s=0.0)
    np.testing.assert_allclose(out.times, [0.05, 0.1, 0.15])
    assert out.interpolation == 'cubic'


# --- the queue's views ---------------------------------------------------------------------


def _queue_with_plan(values, stamp: float = 0.0, strategy='replace') -> ActionQueue:
    q = ActionQueue(1, strategy)
    q.add_chunk(ActionChunk(stamp, DT, np.asarray(values, float)[:, None]), now=stamp)
    return q


def test_remaining_time_is_zero_without_a_plan_and_counts_down_with_one():
    q = ActionQueue(1)
    assert q.remaining_s(0.0) == 0.0
    q = _queue_with_plan(np.arange(5.0))
    assert q.remaining_s(0.05) == pytest.approx(0.15) and q.remaining_s(1.0) == 0.0


def test_plan_view_at_knots_and_resampled_within_the_horizon():
    q = _queue_with_plan(np.arange(6.0))  # knots 0 .. 0.25
    assert q.plan_view(0.25) is None and ActionQueue(1).plan_view(0.0) is None
    v = q.plan_view(0.07)
    assert v.start_s == 0.07
    np.testing.assert_allclose(v.time_from_start_s, [0.0, 0.03, 0.08, 0.13, 0.18])
    np.testing.assert_allclose(v.positions[:, 0], [1.4, 2.0, 3.0, 4.0, 5.0])
    v = q.plan_view(0.05, horizon_s=0.1)  # a knot exactly at now is not repeated
    np.testing.assert_allclose(v.time_from_start_s, [0.0, 0.05, 0.1])
    v = q.plan_view(0.0, horizon_s=0.1, step_s=0.05)
    np.testing.assert_allclose(v.time_from_start_s, [0.0, 0.05, 0.1])
    v = q.plan_view(0.0, step_s=0.125)
    np.testing.assert_allclose(v.time_from_start_s, [0.0, 0.125, 0.25])  # the end included


def test_guidance_prefix_covers_the_step_on_the_plans_last_knot():
    q = _queue_with_plan(np.arange(4.0))  # ends at 0.15
    prefix, covered = q.guidance_prefix(0.05, DT, 4)
    assert covered.tolist() == [True, True, True, False]
    np.testing.assert_allclose(prefix[:, 0], [1.0, 2.0, 3.0, 3.0])


def test_set_strategy_by_name_takes_effect_and_drops_history_it_no_longer_needs():
    q = _queue_with_plan(np.zeros(10), strategy='temporal_ensemble')
    q.add_chunk(ActionChunk(0.05, DT, np.full((10, 1), 2.0)), now=0.05)
    q.set_strategy('replace')
    assert q.strategy.name == 'replace'
    q.set_strategy('temporal_ensemble')  # the history is gone: no old chunk to average with
    q.add_chunk(ActionChunk(0.1, DT, np.full((10, 1), 4.0)), now=0.1)
    assert q.target(0.2).position[0] == pytest.approx(4.0)
    q.set_strategy(TemporalEnsemble(k=0.0))
    q.add_chunk(ActionChunk(0.15, DT, np.full((10, 1), 6.0)), now=0.15)
    assert q.target(0.2).position[0] == pytest.approx(5.0)  # kept: 4 and 6 averaged


def test_clear_forgets_the_last_chunk_and_the_history():
    q = _queue_with_plan(np.zeros(10), strategy='temporal_ensemble')
    q.clear()
    assert q.last_chunk is None and q.plan() is None
    q.add_chunk(ActionChunk(0.05, DT, np.full((10, 1), 2.0)), now=0.05)
    assert q.target(0.1).position[0] == 2.0


# --- the delay estimate and when to request ------------------------------------------------


def test_latency_estimator_defaults_skip_two_and_remember_a_hundred():
    est = LatencyEstimator()
    for x in (9.0, 9.0, 0.5):
        est.add(x)
    assert est.estimate_s() == 0.5  # the first two were the warm-up
    for _ in range(99):
        est.add(0.1)
    assert est.estimate_s() == 0.5 and est.count == 100
    est.add(0.1)
    assert est.estimate_s() == 0.1  # 0.5 left the window of 100


def test_percentile_rule_defaults_to_the_90th():
    est = LatencyEstimator(rule='percentile', warmup=0)
    for x in range(1, 11):
        est.add(float(x))
    assert est.estimate_s() == pytest.approx(9.1)


def test_request_values_are_checked_per_mode():
    assert RequestPolicy('horizon_fraction', 0.0).value == 0.0
    assert RequestPolicy('horizon_fraction', 1.0).value == 1.0
    assert RequestPolicy('horizon_s', 2.0).value == 2.0
    assert RequestPolicy('period_s', 3600.0).value == 3600.0
    with pytest.raises(ValueError, match=r'horizon_fraction value 1.5 is outside \[0, 1.0\]'):
        RequestPolicy('horizon_fraction', 1.5)
    with pytest.raises(ValueError, match=r'outside \[0, 3600.0\]'):
        RequestPolicy('period_s', 3600.5)
    with pytest.raises(ValueError, match="request mode 'often' is not one of"):
        RequestPolicy('often', 0.5)


def test_first_request_and_an_empty_plan_request_at_once():
    p = RequestPolicy('horizon_fraction', 0.0)
    assert p.should_request(0.0, remaining_s=5.0, expected_delay_s=0.0, chunk_span_s=1.0,
                            last_request_s=None)
    every_10_s = RequestPolicy('period_s', 10.0)
    assert every_10_s.should_request(1.0, remaining_s=0.0, expected_delay_s=0.0,
                                     chunk_span_s=1.0, last_request_s=0.5)
    assert not every_10_s.should_request(1.0, remaining_s=0.01, expected_delay_s=0.0,
                                         chunk_span_s=1.0, last_request_s=0.5)


def test_request_thresholds_scale_with_the_chunk_or_are_seconds():
    frac, secs = RequestPolicy('horizon_fraction', 0.25), RequestPolicy('horizon_s', 0.25)
    kw = {'now': 1.0, 'expected_delay_s': 0.25, 'last_request_s': 0.0}
    # Left after the delay: 0.25 s, exactly the threshold of 0.25 x a 1 s chunk: request.
    assert frac.should_request(remaining_s=0.5, chunk_span_s=1.0, **kw)
    assert not frac.should_request(remaining_s=0.5, chunk_span_s=0.5, **kw)  # 0.125 s
    assert secs.should_request(remaining_s=0.5, chunk_span_s=0.5, **kw)
    assert not secs.should_request(remaining_s=0.75, chunk_span_s=4.0, **kw)
