"""What chunks, trajectories and the queue accept, store and report: shapes, dtypes and
read-only copies, the errors bad input gets, the merge report, history caps, stall resume on
a shared knot. Each test pins one behaviour a silent change would break (found by
`make mutation ARGS=chunking`)."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.runtime.chunking.action_queue import ActionQueue, MergeReport
from vla_ros.runtime.chunking.chunk import ActionChunk
from vla_ros.runtime.chunking.merge import MergeInput, TemporalEnsemble, make_strategy
from vla_ros.runtime.chunking.timing import dedupe_times, tol_s
from vla_ros.runtime.chunking.trajectory import Trajectory

DT = 0.05


def chunk(stamp: float, values, dt: float = DT) -> ActionChunk:
    a = np.asarray(values, dtype=float)
    return ActionChunk(stamp_s=stamp, dt_s=dt, actions=a if a.ndim == 2 else a[:, None])


# --- ActionChunk ---------------------------------------------------------------------------


def test_a_chunk_keeps_a_read_only_float64_copy_of_its_actions():
    given = [[1, 2], [3, 4]]
    c = ActionChunk(0.0, DT, given)
    assert isinstance(c.actions, np.ndarray) and c.actions.dtype == np.float64
    assert not c.actions.flags.writeable
    assert c.trajectory('cubic').interpolation == 'cubic'


@pytest.mark.parametrize('actions', [np.zeros((0, 2)), np.zeros((3, 0)), np.zeros(3),
                                     np.zeros((2, 2, 2))])
def test_a_chunk_needs_h_by_a_actions(actions):
    with pytest.raises(ValueError, match=r'^chunk actions must be \(H, A\) with H, A >= 1, got'):
        ActionChunk(0.0, DT, actions)


def test_a_chunk_of_one_action_is_valid():
    assert ActionChunk(0.0, DT, np.zeros((1, 3))).horizon == 1


def test_a_chunk_refuses_nan_actions_a_bad_stamp_or_a_dt_not_above_zero():
    with pytest.raises(ValueError, match=r'^chunk holds non-finite actions \(NaN/inf\); it is '
                                         r'rejected$'):
        ActionChunk(0.0, DT, [[np.nan]])
    for stamp, dt in ((np.nan, DT), (np.inf, DT), (0.0, 0.0), (0.0, -DT), (0.0, np.nan)):
        with pytest.raises(ValueError, match=r'^chunk stamp .* and dt .* must be finite, dt > 0$'):
            ActionChunk(stamp, dt, [[0.0]])


# --- Trajectory ----------------------------------------------------------------------------


def test_a_trajectory_keeps_read_only_float64_copies():
    tr = Trajectory([0, 1], [[0], [2]])
    for a in (tr.times, tr.positions):
        assert isinstance(a, np.ndarray) and a.dtype == np.float64 and not a.flags.writeable


@pytest.mark.parametrize('times, positions', [
    ([0.0, 1.0], [0.0, 1.0]),  # positions not (K, A)
    ([[0.0], [1.0]], [[0.0], [1.0]]),  # times not (K,)
    ([0.0, 1.0], [[0.0]]),  # lengths differ
    ([], np.zeros((0, 1))),  # empty
])
def test_a_trajectory_needs_k_times_and_k_by_a_positions(times, positions):
    with pytest.raises(ValueError, match=r'^trajectory needs times \(K,\) and positions \(K, A\)'):
        Trajectory(times, positions)


@pytest.mark.parametrize('times', [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0, 1.0]])
def test_trajectory_times_must_be_strictly_increasing(times):
    with pytest.raises(ValueError, match=r'^trajectory times must be strictly increasing$'):
        Trajectory(times, np.zeros((len(times), 1)))


def test_a_trajectory_refuses_non_finite_values_and_unknown_interpolation():
    for times, pos in (([0.0, np.inf], [[0.0], [1.0]]), ([0.0, 1.0], [[0.0], [np.nan]])):
        with pytest.raises(ValueError, match=r'^trajectory holds non-finite times or positions$'):
            Trajectory(times, pos)
    with pytest.raises(ValueError, match=r"^interpolation 'quintic' is not one of"):
        Trajectory([0.0], [[0.0]], 'quintic')


def test_a_one_knot_trajectory_holds_its_value_at_every_query():
    pos, vel = Trajectory([1.0], [[2.0, 3.0]]).sample(np.array([0.0, 1.0, 5.0]))
    assert pos.tolist() == [[2.0, 3.0]] * 3 and vel.tolist() == [[0.0, 0.0]] * 3


def test_before_its_start_a_trajectory_holds_its_first_value():
    pos, vel = Trajectory([1.0, 2.0], [[0.0], [1.0]]).sample(np.array([0.5]))
    assert pos[0, 0] == 0.0 and vel[0, 0] == 0.0


def test_the_velocity_at_a_knot_is_that_of_the_segment_leaving_it():
    tr = Trajectory([0.0, 1.0, 2.0], [[0.0], [1.0], [1.0]])
    assert tr.sample(1.0)[1][0, 0] == 0.0


def test_cubic_velocity_is_continuous_at_knots_with_centred_tangents():
    t = np.arange(5.0)
    tr = Trajectory(t, (t * t)[:, None], 'cubic')  # centred differences of t^2 are exactly 2t
    for k in (1, 2, 3):
        before, at = tr.sample(np.array([t[k] - 1e-9, t[k]]))[1][:, 0]
        assert before == pytest.approx(2 * t[k], abs=1e-6) and at == pytest.approx(2 * t[k])


# --- timing --------------------------------------------------------------------------------


def test_the_grid_tolerance_is_a_millionth_of_a_step():
    assert tol_s(0.05) == pytest.approx(0.05e-6, rel=1e-12)


def test_dedupe_keeps_distinct_times_and_drops_those_within_the_tolerance():
    assert dedupe_times(np.array([]), 0.1).size == 0
    assert dedupe_times(np.array([2.0, 0.0, 1.0]), 0.1).tolist() == [0.0, 1.0, 2.0]
    assert dedupe_times(np.array([0.0, 0.5, 1.5]), 0.5).tolist() == [0.0, 1.5]


# --- the queue -----------------------------------------------------------------------------


def test_queue_settings_are_checked_with_their_reasons():
    assert ActionQueue(1, max_live_chunks=1).max_live_chunks == 1
    with pytest.raises(ValueError, match=r'^max_live_chunks 0 must be >= 1 or None$'):
        ActionQueue(1, max_live_chunks=0)
    with pytest.raises(ValueError, match=r'^action_dim 0 must be >= 1$'):
        ActionQueue(0)
    with pytest.raises(ValueError, match=r"^interpolation 'spline' is not one of"):
        ActionQueue(1, interpolation='spline')


def test_a_fresh_queue_has_merged_nothing_and_counts_each_chunk_once():
    q = ActionQueue(1, 'replace', interpolation='cubic')
    assert q.chunks_merged == 0 and q.last_chunk is None
    c = chunk(0.0, np.arange(4.0))
    report = q.add_chunk(c, now=0.0)
    assert q.chunks_merged == 1 and q.last_chunk is c
    assert (report.jump_position, report.jump_velocity, report.resumed_steps) == (0.0, 0.0, 0)
    assert q.plan().interpolation == 'cubic'


def test_a_chunk_stamped_at_the_future_tolerance_is_taken_and_beyond_it_refused():
    q = ActionQueue(1, 'replace')
    q.add_chunk(chunk(1.05, [0.0, 1.0]), now=1.0)
    with pytest.raises(ValueError, match=r'^chunk stamped 0.100 s in the future: the observation '
                                         r'stamps and the control clock disagree$'):
        q.add_chunk(chunk(1.1, [0.0, 1.0]), now=1.0)


def test_a_stale_chunk_reports_its_latency_and_every_action_dropped():
    q = ActionQueue(1, 'replace')
    q.add_chunk(chunk(0.0, np.arange(20.0)), now=0.0)
    report = q.add_chunk(chunk(0.0, [5.0, 5.0, 5.0]), now=0.5)
    assert report == MergeReport(latency_s=0.5, dropped_steps=3, jump_position=0.0,
                                 jump_velocity=0.0, stale=True)


def test_a_chunk_whose_last_action_is_meant_for_now_is_merged():
    q = ActionQueue(1, 'replace')
    report = q.add_chunk(chunk(0.0, [1.0, 2.0, 3.0]), now=0.1)
    assert not report.stale and q.target(0.1).position[0] == 3.0
    assert not q.target(0.1).starved  # the plan's last instant is still planned
    assert q.target(0.11).starved


def test_the_velocity_jump_compares_the_old_and_new_plans_velocities():
    q = ActionQueue(1, 'replace')
    q.add_chunk(chunk(0.0, DT * np.arange(10)), now=0.0)  # 1 unit/s
    report = q.add_chunk(chunk(0.1, 0.1 + 3 * DT * np.arange(10)), now=0.1)  # 3 units/s
    assert report.jump_position == pytest.approx(0.0, abs=1e-12)
    assert report.jump_velocity == pytest.approx(2.0)


def test_a_plan_ending_at_now_is_still_blended_by_a_weighted_merge():
    q = ActionQueue(1, 'weighted_average')  # old 0.3 / new 0.7
    q.add_chunk(chunk(0.0, [0.0, 0.0, 0.0]), now=0.0)  # ends at 0.1
    q.add_chunk(chunk(0.1, [1.0] * 5), now=0.1)
    assert q.target(0.1).position[0] == pytest.approx(0.7)


def test_without_latency_compensation_nothing_is_counted_as_resumed():
    q = ActionQueue(1, 'replace', latency_compensation=False)
    q.add_chunk(chunk(0.0, np.arange(5.0)), now=0.0)
    q.target(0.5)
    report = q.add_chunk(chunk(0.3, np.arange(5.0)), now=0.5)
    assert report.resumed_steps == 0 and q.target(0.5).position[0] == 0.0


def test_a_stall_resumes_after_the_last_executed_action_even_on_a_shared_knot():
    q = ActionQueue(1, 'replace')
    q.add_chunk(chunk(0.0, np.arange(5.0)), now=0.0)  # actions 0..4 up to 0.2
    q.target(0.5)  # ran dry at 0.2, holding 4
    # The new chunk's knots include 0.2, the one the plan ended on: it already ran.
    q.add_chunk(chunk(0.1, 2.0 + np.arange(10.0)), now=0.5)  # action k for 0.1 + k dt
    assert q.target(0.5).position[0] == pytest.approx(5.0)  # 0.25's action, not 0.2's (4)


def test_the_control_clock_going_back_is_refused_with_the_amount():
    q = ActionQueue(1, 'replace')
    q.add_chunk(chunk(0.0, np.arange(5.0)), now=0.0)
    q.target(1.0)
    with pytest.raises(ValueError, match=r'^control time went backwards by 0.500000 s$'):
        q.target(0.5)


def test_a_capped_ensemble_in_the_queue_keeps_only_the_newest_chunks():
    q = ActionQueue(1, TemporalEnsemble(k=0.0), max_live_chunks=1)
    for i, v in enumerate((0.0, 2.0, 4.0)):
        q.add_chunk(chunk(i * DT, [v] * 10), now=i * DT)
    assert q.target(0.1).position[0] == pytest.approx(3.0)  # 2 and 4; 0 was dropped


# --- history and construction by name ------------------------------------------------------


def test_ensemble_history_cap_drops_the_least_weighted_first():
    a, b, c, d, e = (Trajectory([float(i)], [[float(i)]]) for i in range(5))
    assert TemporalEnsemble(k=0.01).history([a, b, c, d, e], 4) == [a, b, c, e]
    assert TemporalEnsemble(k=0.0).history([a, b, c, d, e], 4) == [b, c, d, e]
    assert TemporalEnsemble(k=0.01).history([a, b, c], 1) == [c]


def test_make_strategy_passes_settings_on():
    assert make_strategy('average', old_weight=0.4).old_weight == 0.4
    with pytest.raises(ValueError, match=r"^merge strategy 'newest' is not one of"):
        make_strategy('newest')


def test_a_replace_drops_new_knots_within_half_a_step_after_now():
    new = Trajectory(DT * np.arange(4), np.arange(4.0)[:, None])
    out = make_strategy('replace').merge(MergeInput(now=0.04, new=new, new_stamp_s=0.0, dt_s=DT,
                                                    horizon=4, old=None, live=()))
    np.testing.assert_allclose(out.times, [0.04, 0.1, 0.15])


def test_a_chunk_arriving_after_a_stall_with_nothing_missed_is_not_counted_as_resumed():
    q = ActionQueue(1, 'replace')
    q.add_chunk(chunk(0.0, np.arange(5.0)), now=0.0)  # ends at 0.2
    q.target(0.5)
    report = q.add_chunk(chunk(0.5, [7.0] * 5), now=0.5)  # observed now: no action missed
    assert report.resumed_steps == 0 and q.target(0.5).position[0] == 7.0


def test_without_compensation_rtc_blend_indexes_the_chunk_from_its_arrival():
    # The chunk observed 0.1 s ago starts at arrival: its delay is one step (the action at
    # now), so index 2 is RTC's soft step c = (H - s - 2) / (H - s - d + 1) = 3 / 5 with
    # H = 10, s = 5, d = 1.
    import math

    q = ActionQueue(1, 'rtc_blend', latency_compensation=False)
    q.add_chunk(chunk(0.0, [0.0] * 40), now=0.0)
    q.add_chunk(chunk(0.4, [1.0] * 10), now=0.5)
    c = 0.6
    w = c * math.expm1(c) / (math.e - 1.0)
    assert q.target(0.6).position[0] == pytest.approx(1.0 - w)
