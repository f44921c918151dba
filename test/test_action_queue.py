"""ActionQueue: time-indexed targets, latency compensation, merge strategies, thread safety."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.runtime.chunking.action_queue import ActionQueue
from vla_ros.runtime.chunking.chunk import ActionChunk
from vla_ros.runtime.chunking.merge import STRATEGIES, rtc_prefix_weights
from vla_ros.runtime.chunking.trajectory import Trajectory

DT = 0.05


def chunk(stamp: float, values, dt: float = DT) -> ActionChunk:
    a = np.asarray(values, dtype=float)
    return ActionChunk(stamp_s=stamp, dt_s=dt, actions=a if a.ndim == 2 else a[:, None])


def ramp(stamp: float, start: float, slope: float = 1.0, h: int = 10) -> ActionChunk:
    """A chunk that moves at `slope` units/s from `start`: action k = start + slope*k*dt."""
    return chunk(stamp, start + slope * DT * np.arange(h))


# --- basic behaviour -----------------------------------------------------------------------


def test_no_target_before_the_first_chunk():
    assert ActionQueue(1).target(0.0) is None


def test_target_interpolates_linearly_between_actions():
    q = ActionQueue(1, 'replace')
    q.add_chunk(chunk(0.0, [0.0, 1.0, 2.0]), now=0.0)
    assert q.target(0.025).position[0] == pytest.approx(0.5)
    assert q.target(0.075).velocity[0] == pytest.approx(1.0 / DT)


def test_cubic_interpolation_passes_through_every_action():
    values = np.array([0.0, 0.3, -0.2, 0.5, 0.1])
    q = ActionQueue(1, 'replace', interpolation='cubic')
    q.add_chunk(chunk(0.0, values), now=0.0)
    for k, v in enumerate(values):
        assert q.target(k * DT).position[0] == pytest.approx(v)


def test_cubic_interpolation_of_constant_velocity_is_exact():
    traj = Trajectory(DT * np.arange(6), (0.2 + 1.5 * DT * np.arange(6))[:, None], 'cubic')
    pos, vel = traj.sample(np.linspace(0, 5 * DT, 37))
    np.testing.assert_allclose(pos[:, 0], 0.2 + 1.5 * np.linspace(0, 5 * DT, 37), atol=1e-12)
    np.testing.assert_allclose(vel[:, 0], 1.5, atol=1e-9)


def test_latency_compensation_drops_the_past_part_of_a_chunk():
    q = ActionQueue(1, 'replace')
    report = q.add_chunk(ramp(0.0, 0.0), now=0.15)
    assert report.dropped_steps == 3  # actions for t = 0, 0.05, 0.10
    assert report.latency_s == pytest.approx(0.15)
    assert q.target(0.15).position[0] == pytest.approx(0.15)  # the action meant for now


def test_without_compensation_the_chunk_starts_from_its_first_action_on_arrival():
    q = ActionQueue(1, 'replace', latency_compensation=False)
    q.add_chunk(ramp(0.0, 0.0), now=0.15)
    assert q.target(0.15).position[0] == pytest.approx(0.0)


def test_a_chunk_entirely_in_the_past_is_reported_stale_and_changes_nothing():
    q = ActionQueue(1, 'replace')
    q.add_chunk(ramp(1.0, 5.0), now=1.0)
    report = q.add_chunk(ramp(0.0, 0.0, h=3), now=1.2)
    assert report.stale
    assert q.target(1.2).position[0] == pytest.approx(5.2)


def test_target_holds_the_last_action_and_says_starved_after_the_plan_ends():
    q = ActionQueue(1, 'replace')
    q.add_chunk(chunk(0.0, [1.0, 2.0]), now=0.0)
    target = q.target(1.0)
    assert target.starved and target.position[0] == 2.0 and target.velocity[0] == 0.0
    assert q.remaining_s(1.0) == 0.0


def test_control_time_going_backwards_is_an_error():
    q = ActionQueue(1, 'replace')
    q.add_chunk(ramp(0.0, 0.0), now=0.0)
    q.target(0.2)
    with pytest.raises(ValueError, match='backwards'):
        q.target(0.1)


def test_a_late_merge_never_replans_before_the_last_executed_time():
    q = ActionQueue(1, 'replace')
    q.add_chunk(ramp(0.0, 0.0), now=0.0)
    q.target(0.3)
    q.add_chunk(ramp(0.1, 10.0), now=0.2)  # the worker's clock read lags the control loop
    assert q.plan().start == pytest.approx(0.3)


def test_chunks_of_the_wrong_width_are_rejected():
    q = ActionQueue(2)
    with pytest.raises(ValueError, match='1 action dims'):
        q.add_chunk(ramp(0.0, 0.0), now=0.0)


def test_chunks_stamped_in_the_future_are_rejected():
    with pytest.raises(ValueError, match='future'):
        ActionQueue(1).add_chunk(ramp(1.0, 0.0), now=0.0)


def test_non_finite_actions_never_become_a_chunk():
    with pytest.raises(ValueError, match='non-finite'):
        chunk(0.0, [0.0, np.nan])


def test_clear_drops_the_plan():
    q = ActionQueue(1)
    q.add_chunk(ramp(0.0, 0.0), now=0.0)
    q.clear()
    assert q.target(0.1) is None and q.plan() is None


def test_returned_arrays_are_copies():
    q = ActionQueue(1, 'replace')
    q.add_chunk(ramp(0.0, 0.0), now=0.0)
    target = q.target(0.1)
    target.position[0] = 99.0
    assert q.target(0.1).position[0] == pytest.approx(0.1)


def test_plan_view_gives_times_from_now_positions_and_velocities():
    q = ActionQueue(1, 'replace')
    q.add_chunk(ramp(0.0, 0.0, slope=2.0), now=0.0)
    view = q.plan_view(0.1, step_s=0.1)
    np.testing.assert_allclose(view.time_from_start_s, [0.0, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(view.positions[:, 0], [0.2, 0.4, 0.6, 0.8])
    np.testing.assert_allclose(view.velocities[:-1, 0], 2.0)


def test_guidance_prefix_samples_the_executing_plan_at_the_next_chunks_times():
    q = ActionQueue(1, 'replace')
    q.add_chunk(ramp(0.0, 0.0, h=10), now=0.0)  # covers t in [0, 0.45]
    prefix, covered = q.guidance_prefix(0.3, DT, 6)
    np.testing.assert_allclose(prefix[:4, 0], [0.3, 0.35, 0.4, 0.45])
    assert covered.tolist() == [True] * 4 + [False] * 2


# --- one behaviour per strategy ------------------------------------------------------------


def _two_chunks(strategy: str, **kw) -> tuple[ActionQueue, object]:
    q = ActionQueue(1, strategy, **kw)
    q.add_chunk(chunk(0.0, np.zeros(20)), now=0.0)
    report = q.add_chunk(chunk(0.2, np.ones(20)), now=0.3)
    return q, report


def test_replace_switches_to_the_new_chunk_at_once():
    q, report = _two_chunks('replace')
    assert q.target(0.3).position[0] == pytest.approx(1.0)
    assert report.jump_position == pytest.approx(1.0)


@pytest.mark.parametrize('name,old_weight', [('weighted_average', 0.3), ('average', 0.5),
                                             ('conservative', 0.7)])
def test_weighted_average_presets_blend_the_overlap_like_lerobot(name, old_weight):
    q, report = _two_chunks(name)
    assert q.target(0.3).position[0] == pytest.approx(1.0 - old_weight)
    assert report.jump_position == pytest.approx(1.0 - old_weight)
    assert q.target(1.0).position[0] == pytest.approx(1.0)  # past the old chunk: new only


def test_temporal_ensemble_weights_the_oldest_chunk_most():
    q = ActionQueue(1, 'temporal_ensemble')
    q.add_chunk(chunk(0.0, np.zeros(20)), now=0.0)
    q.add_chunk(chunk(0.1, np.ones(20)), now=0.1)
    q.add_chunk(chunk(0.2, 2 * np.ones(20)), now=0.2)
    w = np.exp(-0.01 * np.arange(3))  # ACT: i = 0 is the oldest
    expected = (w @ [0.0, 1.0, 2.0]) / w.sum()
    assert q.target(0.2).position[0] == pytest.approx(expected)
    assert w[0] > w[1] > w[2]


def test_rtc_weights_match_the_soft_mask_formula():
    # H = 8, d = 2, s = 3: W = 1 for i < 2, c*(e^c - 1)/(e - 1) with c = (5 - i)/4, then 0.
    w = rtc_prefix_weights(np.arange(8), delay_steps=2, horizon=8, execution_horizon=3)
    np.testing.assert_allclose(w, [1, 1, 0.487551, 0.188770, 0.041324, 0, 0, 0], atol=1e-6)
    lin = rtc_prefix_weights(np.arange(8), 2, 8, 3, schedule='linear')
    np.testing.assert_allclose(lin, [1, 1, 0.75, 0.5, 0.25, 0, 0, 0])


def test_rtc_blend_keeps_the_plan_continuous_at_the_merge():
    q, report = _two_chunks('rtc_blend')
    assert report.jump_position == pytest.approx(0.0, abs=1e-12)
    assert q.target(0.3).position[0] == pytest.approx(0.0)
    assert q.target(1.15).position[0] == pytest.approx(1.0)  # beyond H - s: the new chunk


def test_rtc_inpaint_trusts_the_inpainted_chunk():
    q, _ = _two_chunks('rtc_inpaint')
    assert q.target(0.3).position[0] == pytest.approx(1.0)


def test_unknown_strategy_names_the_choices():
    with pytest.raises(ValueError, match='not one of'):
        ActionQueue(1, 'magic')


# --- properties ----------------------------------------------------------------------------

chunk_sequences = st.lists(
    st.tuples(st.floats(0.0, 0.3),  # latency
              st.floats(0.02, 0.4),  # gap until the next observation
              st.lists(st.floats(-3, 3), min_size=2, max_size=12)),
    min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(seq=chunk_sequences, strategy=st.sampled_from(STRATEGIES))
def test_property_no_action_meant_for_the_past_is_ever_executed(seq, strategy):
    q = ActionQueue(1, strategy)
    stamp, last_t = 0.0, 0.0
    for latency, gap, values in seq:
        now = max(stamp + latency, last_t)
        c = chunk(stamp, values)
        before = q.plan()
        report = q.add_chunk(c, now=now)
        plan = q.plan()
        if not report.stale:
            assert plan.start >= now - 1e-9
            if strategy in ('replace', 'rtc_inpaint', 'rtc_guided'):
                # The action meant for now; after a stall, the first one not yet executed.
                expected = c.trajectory().at(now)[0]
                if before is not None and before.end < now - 1e-9:
                    pending = c.times > before.end + 1e-9
                    if c.times[pending][0] < now:
                        expected = c.actions[pending][0, 0]
                assert plan.at(now)[0] == pytest.approx(expected, abs=1e-9)
        for t in np.linspace(now, now + gap, 4):
            target = q.target(t)  # None while every chunk so far came in stale
            assert target is None or np.all(np.isfinite(target.position))
            last_t = t
        stamp += gap


@settings(max_examples=60, deadline=None)
@given(seq=chunk_sequences, strategy=st.sampled_from(STRATEGIES))
def test_property_targets_stay_within_the_range_of_the_chunks(seq, strategy):
    q = ActionQueue(1, strategy, interpolation='linear')
    stamp, lo, hi = 0.0, np.inf, -np.inf
    for latency, gap, values in seq:
        lo, hi = min(lo, min(values)), max(hi, max(values))
        q.add_chunk(chunk(stamp, values), now=stamp + latency)
        for t in np.linspace(stamp + latency, stamp + latency + gap, 5):
            target = q.target(t)
            assert target is None or lo - 1e-9 <= target.position[0] <= hi + 1e-9
        stamp += gap + latency


@settings(max_examples=40, deadline=None)
@given(old=st.floats(-2, 2), new=st.floats(-2, 2), latency=st.floats(0.0, 0.25),
       name=st.sampled_from(['replace', 'weighted_average', 'average', 'conservative',
                             'rtc_blend']))
def test_property_merge_discontinuity_is_within_the_strategys_bound(old, new, latency, name):
    # The stated bound: |jump| <= (1 - w_old) * |new - old|, with w_old = 0 for replace, the
    # LeRobot preset for the weighted averages, and 1 (continuous) for rtc_blend.
    w_old = {'replace': 0.0, 'weighted_average': 0.3, 'average': 0.5, 'conservative': 0.7,
             'rtc_blend': 1.0}[name]
    q = ActionQueue(1, name)
    q.add_chunk(chunk(0.0, np.full(20, old)), now=0.0)
    report = q.add_chunk(chunk(0.2, np.full(20, new)), now=0.2 + latency)
    assert report.jump_position <= (1 - w_old) * abs(new - old) + 1e-9


def test_property_producer_and_consumer_threads_share_the_queue_safely():
    q = ActionQueue(3, 'temporal_ensemble')
    clock = {'t': 0.0}
    lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()
    rng = np.random.default_rng(0)

    def now() -> float:
        with lock:
            return clock['t']

    first = threading.Event()

    def producer() -> None:
        try:
            while not stop.is_set():
                t = now()
                q.add_chunk(ActionChunk(t, DT, rng.uniform(-1, 1, (10, 3))), now=t)
                first.set()
        except BaseException as e:  # collected and checked by the test
            errors.append(e)
            first.set()

    thread = threading.Thread(target=producer)
    thread.start()
    try:
        assert first.wait(timeout=10)
        for _ in range(400):
            with lock:
                clock['t'] += 0.001
            target = q.target(now())
            assert np.all(np.abs(target.position) <= 1.0 + 1e-9)
            time.sleep(0)  # let the producer in between reads
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive() and not errors, errors
    assert q.chunks_merged > 10


def test_rtc_blend_at_a_delay_beyond_the_horizon_still_merges():
    # A delay of 3 of H = 4 steps leaves no soft region (s is clamped to 1): the executing
    # plan is kept through the frozen prefix, continuous at now, and the new chunk follows.
    q = ActionQueue(1, 'rtc_blend')
    q.add_chunk(chunk(0.04, np.zeros(4)), now=0.04)
    report = q.add_chunk(chunk(0.05, np.ones(4)), now=0.05 + 0.12)
    assert not report.stale and report.dropped_steps == 3
    assert report.jump_position == pytest.approx(0.0, abs=1e-12)
    assert q.target(0.17).position[0] == pytest.approx(0.0, abs=1e-12)
    assert q.target(0.20).position[0] == pytest.approx(1.0)
