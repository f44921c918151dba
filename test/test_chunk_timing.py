"""Chunk execution on real-valued grids: times that are equal in exact arithmetic are equal to
the queue (dt = 0.05, 1/30), a resume after a stall, and ACT's ensemble without a cap that
drops contributing chunks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vla_ros.runtime.chunking.action_queue import ActionQueue
from vla_ros.runtime.chunking.chunk import ActionChunk
from vla_ros.runtime.chunking.merge import TemporalEnsemble, rtc_prefix_weights
from vla_ros.runtime.chunking.timing import dedupe_times, step_index

DTS = (0.05, 1 / 30)
# Observation stamps on a 10 ms clock, as a 100 Hz control loop stamps them.
STAMPS = np.round(np.arange(0.0, 1.0, 0.01), 2)


def const(stamp: float, value: float, h: int, dt: float) -> ActionChunk:
    return ActionChunk(stamp_s=stamp, dt_s=dt, actions=np.full((h, 1), value))


@pytest.mark.parametrize('dt', DTS)
def test_knots_of_a_chunk_have_integer_step_indices(dt):
    for stamp in STAMPS:
        times = stamp + dt * np.arange(20)
        np.testing.assert_array_equal(step_index(times, stamp, dt), np.arange(20))


def test_knots_equal_up_to_rounding_are_one_knot():
    t = dedupe_times(np.array([0.45, 0.1 + 0.35, 0.5]), 1e-9)
    assert len(t) == 2 and t[1] == 0.5


@pytest.mark.parametrize('dt', DTS)
def test_weighted_average_blends_a_last_step_both_chunks_share(dt):
    # The old chunk ends exactly where the new one has a knot (in exact arithmetic); the
    # blend there is 0.3 old + 0.7 new for every stamp, whatever the rounding of the sums.
    h, j = 10, 2
    for s0 in STAMPS:
        q = ActionQueue(1, 'weighted_average')
        q.add_chunk(const(s0, 0.0, h, dt), now=s0)
        s1 = s0 + j * dt
        q.add_chunk(const(s1, 1.0, h, dt), now=s1)
        last_shared = s0 + dt * (h - 1)
        assert q.target(last_shared).position[0] == pytest.approx(0.7), f'stamp {s0}'


@pytest.mark.parametrize('dt', DTS)
def test_rtc_blend_first_soft_step_gets_the_soft_weight(dt):
    # H = 20, merged 6.4 steps after the new chunk's stamp: d = 7, s = 10, so knot 7 is the
    # first soft one, W(7) = 0.75 (e^0.75 - 1) / (e - 1) on the old chunk, never 1.
    h = 20
    w7 = float(rtc_prefix_weights(np.array([7.0]), 7, h, 10)[0])
    for stamp in STAMPS + 1.0:
        q = ActionQueue(1, 'rtc_blend')
        q.add_chunk(const(stamp - 0.5, 0.0, 40, dt), now=stamp - 0.5)
        q.add_chunk(const(stamp, 1.0, h, dt), now=stamp + 6.4 * dt)
        knot7 = stamp + 7 * dt
        assert q.target(knot7).position[0] == pytest.approx(1.0 - w7), f'stamp {stamp}'


@pytest.mark.parametrize('dt', DTS)
def test_a_chunk_ending_exactly_at_the_merge_stays_in_the_ensemble(dt):
    h = 10
    w = math.exp(-0.01)  # the newer chunk's ACT weight against the older one's 1
    for s0 in STAMPS:
        q = ActionQueue(1, 'temporal_ensemble')
        q.add_chunk(const(s0, 0.0, h, dt), now=s0)
        now = round(s0 + dt * (h - 1), 9)  # the old chunk's last step, as a clock reads it
        q.add_chunk(const(now - 3 * dt, 1.0, h, dt), now=now)
        assert q.target(now).position[0] == pytest.approx(w / (1 + w)), f'stamp {s0}'


def _ramp(stamp: float, dt: float, h: int = 20) -> ActionChunk:
    """One unit per step, meant for stamp + k dt: action k = stamp / dt + k."""
    return ActionChunk(stamp_s=stamp, dt_s=dt,
                       actions=(stamp / dt + np.arange(h, dtype=float))[:, None])


def test_after_a_stall_the_next_chunk_resumes_at_its_first_unexecuted_action():
    dt = 0.05
    q = ActionQueue(1, 'replace')
    q.add_chunk(_ramp(0.0, dt, h=5), now=0.0)  # plans 0..4 up to t = 0.2
    q.target(0.45)  # the plan ran dry at 0.2: the arm held 4 for 5 steps
    # Observed at 0.25, arriving at 0.45: its actions for 0.25..0.40 never ran.
    report = q.add_chunk(_ramp(0.25, dt), now=0.45)
    assert q.target(0.45).position[0] == pytest.approx(5.0)  # the next action, not 9
    assert report.resumed_steps == 4


def test_after_a_stall_the_jump_is_reported_as_measured():
    dt = 0.05
    q = ActionQueue(1, 'replace')
    q.add_chunk(_ramp(0.0, dt, h=5), now=0.0)
    q.target(0.45)
    held = q.target(0.45).position[0]
    report = q.add_chunk(_ramp(0.25, dt), now=0.45)
    assert report.jump_position == pytest.approx(abs(q.target(0.45).position[0] - held))
    assert report.jump_position == pytest.approx(1.0)


def test_without_a_stall_compensation_still_starts_at_the_action_meant_for_now():
    dt = 0.05
    q = ActionQueue(1, 'replace')
    q.add_chunk(_ramp(0.0, dt), now=0.0)
    report = q.add_chunk(_ramp(0.25, dt), now=0.4)
    assert q.target(0.4).position[0] == pytest.approx(8.0)
    assert report.resumed_steps == 0


def test_temporal_ensemble_keeps_every_chunk_still_covering_now():
    # ACT with a chunk every step and H = 30: at step 25 all 26 chunks predict it.
    dt, h = 0.05, 30
    q = ActionQueue(1, 'temporal_ensemble')
    values = np.arange(26, dtype=float)
    for i, v in enumerate(values):
        q.add_chunk(const(i * dt, v, h, dt), now=i * dt)
    w = np.exp(-0.01 * np.arange(26))
    assert q.target(25 * dt).position[0] == pytest.approx(w @ values / w.sum())


def test_a_capped_ensemble_drops_the_least_weighted_chunks():
    chunks = ['c0', 'c1', 'c2', 'c3', 'new']
    assert TemporalEnsemble(k=0.01).history(chunks, cap=3) == ['c0', 'c1', 'new']
    assert TemporalEnsemble(k=-0.5).history(chunks, cap=3) == ['c2', 'c3', 'new']


def test_negative_ensemble_coefficients_weight_the_newest_most_as_act_allows():
    dt = 0.05
    q = ActionQueue(1, TemporalEnsemble(k=-1.0))
    q.add_chunk(const(0.0, 0.0, 20, dt), now=0.0)
    q.add_chunk(const(dt, 1.0, 20, dt), now=dt)
    w = np.exp(1.0)
    assert q.target(dt).position[0] == pytest.approx(w / (1 + w))
