"""The safety filter's states (engage, disengage, e-stop, reset), its configuration checks, its
trajectory filter and its braking helpers, pinned with hand-worked numbers. The motion
guarantees themselves are property-tested in test_safety_limits.py."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.adapters.safety import (
    REANCHOR_TOLERANCE,
    SafetyConfig,
    SafetyFilter,
    _clamped_scale,
    _stop_speed,
)

DT = 0.01


def _filter(margin=0.1, commanded=None, **cfg) -> SafetyFilter:
    # Two joints in [-1, 1], 1 rad/s, 10 rad/s^2.
    return SafetyFilter([-1.0, -1.0], [1.0, 1.0], [1.0, 1.0], [10.0, 10.0],
                        SafetyConfig(position_margin=margin, **cfg), commanded=commanded)


def _engaged(**kw) -> SafetyFilter:
    f = _filter(**kw)
    f.engage(np.zeros(2))
    return f


# --- configuration ---------------------------------------------------------------------------

@pytest.mark.parametrize('kw,field', [({'position_margin': -0.01}, 'position_margin'),
                                      ({'position_margin': 1.0}, 'position_margin'),
                                      ({'speed_scale': 0.0}, 'speed_scale'),
                                      ({'speed_scale': 1.01}, 'speed_scale'),
                                      ({'acceleration_scale': 0.0}, 'acceleration_scale'),
                                      ({'acceleration_scale': 1.5}, 'acceleration_scale')])
def test_config_out_of_range_names_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        SafetyConfig(**kw)


def test_config_bounds_themselves_are_accepted():
    SafetyConfig(position_margin=0.0, speed_scale=1.0, acceleration_scale=1.0)
    SafetyConfig(position_margin=0.999, speed_scale=1e-6, acceleration_scale=1e-6)


@pytest.mark.parametrize('vel,acc', [([1.0, 0.0], [10.0, 10.0]), ([1.0, 1.0], [10.0, -1.0])])
def test_limits_that_are_not_positive_are_refused(vel, acc):
    with pytest.raises(ValueError, match='^velocity and acceleration limits must be positive$'):
        SafetyFilter([-1, -1], [1, 1], vel, acc, SafetyConfig())


def test_a_margin_that_leaves_no_room_is_refused():
    with pytest.raises(ValueError,
                       match='^position_margin leaves no room inside the joint limits$'):
        SafetyFilter([-1, 0], [1, 0.2], [1, 1], [1, 1], SafetyConfig(position_margin=0.1))
    SafetyFilter([-1, 0], [1, 0.2], [1, 1], [1, 1], SafetyConfig(position_margin=0.099))


# --- states ----------------------------------------------------------------------------------

def test_a_new_filter_is_disengaged_and_holds_where_the_arm_is():
    f = _filter()
    assert (f.state, f.reason) == ('disengaged', 'not engaged')
    cmd = f.step(np.array([0.5, 0.5]), np.array([0.2, -0.3]), DT)
    assert cmd.state == 'disengaged' and cmd.reason == 'not engaged'
    np.testing.assert_array_equal(cmd.positions, [0.2, -0.3])
    np.testing.assert_array_equal(cmd.velocities, [0.0, 0.0])


def test_engage_starts_from_the_measured_pose_and_tracks():
    f = _filter()
    f.engage(np.array([0.3, -0.2]))
    assert (f.state, f.reason) == ('engaged', '')
    cmd = f.step(np.array([0.3, 1.0]), np.array([0.3, -0.2]), DT)
    assert cmd.state == 'engaged' and cmd.reason == ''
    np.testing.assert_allclose(cmd.positions, [0.3, -0.2 + 10.0 * DT * DT])  # a dt, one tick


def test_estop_latches_with_its_reason_and_brakes():
    f = _engaged()
    for _ in range(20):
        f.step(np.array([1.0, 1.0]), np.zeros(2), DT)
    moving = f.vel.copy()
    assert np.all(moving > 0)
    f.estop('button pressed')
    assert (f.state, f.reason) == ('estop', 'button pressed')
    cmd = f.step(np.array([1.0, 1.0]), np.zeros(2), DT)
    assert cmd.state == 'estop' and cmd.reason == 'button pressed'
    np.testing.assert_allclose(cmd.velocities, moving - 10.0 * DT)  # braking, not a jump
    with pytest.raises(RuntimeError, match='reset'):
        f.engage(np.zeros(2))
    f.disengage()
    assert (f.state, f.reason) == ('estop', 'button pressed')  # disengage never clears it


def test_estop_without_a_reason_says_e_stop():
    f = _engaged()
    f.estop()
    assert (f.state, f.reason) == ('estop', 'e-stop')


def test_reset_clears_an_estop_to_disengaged_and_needs_a_new_engage():
    f = _engaged()
    f.estop('x')
    with pytest.raises(RuntimeError, match='^e-stop is latched: call reset before engaging$'):
        f.engage(np.zeros(2))
    f.reset()
    assert (f.state, f.reason) == ('disengaged', 'not engaged')
    cmd = f.step(np.array([1.0, 1.0]), np.zeros(2), DT)
    assert cmd.state == 'disengaged'
    f.engage(np.zeros(2))
    assert f.state == 'engaged'


def test_reset_without_an_estop_changes_nothing():
    f = _engaged()
    f.reset()
    assert (f.state, f.reason) == ('engaged', '')
    f.step(None, np.zeros(2), DT, fault='stale joint states')
    f.reset()
    assert (f.state, f.reason) == ('holding', 'stale joint states')


def test_disengage_from_engaged_or_holding_says_not_engaged():
    for fault in ('', 'stale camera'):
        f = _engaged()
        f.step(None if fault else np.zeros(2), np.zeros(2), DT, fault=fault)
        f.disengage()
        assert (f.state, f.reason) == ('disengaged', 'not engaged')


def test_a_fault_holds_with_its_reason_and_clears_when_it_ends():
    f = _engaged()
    cmd = f.step(np.array([0.5, 0.5]), np.zeros(2), DT, fault='stale camera')
    assert (cmd.state, cmd.reason) == ('holding', 'stale camera')
    cmd = f.step(None, np.zeros(2), DT)
    assert (cmd.state, cmd.reason) == ('holding', 'no target')
    cmd = f.step(np.array([0.5, 0.5]), np.zeros(2), DT)
    assert (cmd.state, cmd.reason) == ('engaged', '')
    np.testing.assert_allclose(cmd.velocities, [10.0 * DT] * 2)


def test_non_finite_targets_hold_until_a_finite_one_comes():
    f = _engaged()
    for _ in range(2):
        cmd = f.step(np.array([np.nan, 0.1]), np.zeros(2), DT)
        assert (cmd.state, cmd.reason) == ('holding', 'non-finite target')
    assert f.step(np.array([0.1, 0.1]), np.zeros(2), DT).state == 'engaged'


def test_engage_while_still_braking_carries_on_from_the_command_in_motion():
    f = _engaged()
    for _ in range(20):
        f.step(np.array([1.0, 1.0]), np.zeros(2), DT)
    cmd_before, vel_before = f.cmd.copy(), f.vel.copy()
    f.disengage()
    f.engage(np.zeros(2))  # measured lags the command: re-anchoring would stop in one tick
    np.testing.assert_array_equal(f.cmd, cmd_before)
    np.testing.assert_array_equal(f.vel, vel_before)


def test_engage_from_rest_re_anchors_at_the_measured_pose():
    f = _engaged()
    for _ in range(200):
        f.step(np.array([0.2, 0.2]), np.zeros(2), DT)
    assert not np.any(f.vel)
    f.disengage()
    f.engage(np.array([0.21, 0.19]))
    np.testing.assert_array_equal(f.cmd, [0.21, 0.19])


def test_disengaged_at_rest_follows_an_arm_moved_by_hand_beyond_the_tolerance():
    f = _filter(commanded=[True, False])
    f.step(None, np.zeros(2), DT)
    near = np.array([REANCHOR_TOLERANCE * 0.9, 0.0])
    np.testing.assert_array_equal(f.step(None, near, DT).positions, [0.0, 0.0])
    far = np.array([REANCHOR_TOLERANCE * 1.1, 0.3])
    # The commanded joint re-anchors; the uncommanded one keeps its command.
    np.testing.assert_array_equal(f.step(None, far, DT).positions, [far[0], 0.0])


def test_the_hand_moved_distance_is_measured_from_the_hold_not_from_zero():
    f = _filter()
    f.step(None, np.array([-0.5, 0.2]), DT)  # holds at (-0.5, 0.2)
    moved = np.array([0.5, -0.2])  # the same distance from zero, far from the hold
    np.testing.assert_array_equal(f.step(None, moved, DT).positions, moved)


# --- trajectories ----------------------------------------------------------------------------

def test_trajectory_is_refused_unless_engaged():
    f = _filter()
    assert f.filter_trajectory(np.array([0.1]), np.zeros((1, 2))) is None
    f.engage(np.zeros(2))
    f.step(None, np.zeros(2), DT, fault='x')
    assert f.filter_trajectory(np.array([0.1]), np.zeros((1, 2))) is None


@pytest.mark.parametrize('times,positions', [([0.1, np.nan], [[0, 0], [0, 0]]),
                                             ([0.1, 0.2], [[0, 0], [np.inf, 0]])])
def test_a_non_finite_trajectory_holds(times, positions):
    f = _engaged()
    assert f.filter_trajectory(np.array(times), np.array(positions, float)) is None
    assert (f.state, f.reason) == ('holding', 'non-finite trajectory')


def test_trajectory_starts_at_the_command_is_clipped_and_slowed_to_the_speed_limit():
    f = _engaged()
    times = np.array([0.0, 0.1, 0.5, 1.0])
    positions = np.array([[9.0, 9.0], [0.05, -0.02], [2.0, 0.0], [0.0, -0.4]])
    t, pos, vel = f.filter_trajectory(times, positions)
    # The point at t=0 is dropped (the command is the start); 2.0 clips to 1 - margin.
    np.testing.assert_allclose(pos, [[0, 0], [0.05, -0.02], [0.9, 0.0], [0.0, -0.4]])
    # Segments: 0.1 s at 0.5 rad/s (kept); 0.85 rad needs 0.85 s > 0.4 s; 0.9 rad needs
    # 0.9 s > 0.5 s.
    np.testing.assert_allclose(t, [0.0, 0.1, 0.95, 1.85])
    assert vel.shape == pos.shape and np.all(vel[-1] == 0.0)
    np.testing.assert_allclose(vel[:-1], np.gradient(pos, t, axis=0)[:-1])
    assert np.all(np.abs(vel) <= 1.0)


def test_trajectory_speed_follows_speed_scale_and_the_external_scale():
    f = _engaged(speed_scale=0.5)
    t, _, _ = f.filter_trajectory(np.array([0.1]), np.array([[0.4, 0.0]]))
    np.testing.assert_allclose(t, [0.0, 0.8])  # 0.4 rad at 0.5 rad/s
    t, _, _ = f.filter_trajectory(np.array([0.1]), np.array([[0.4, 0.0]]), external_scale=0.25)
    np.testing.assert_allclose(t, [0.0, 3.2])
    t, _, _ = f.filter_trajectory(np.array([0.1]), np.array([[0.4, 0.0]]),
                                  external_scale=float('nan'))
    np.testing.assert_allclose(t, [0.0, 0.4 / (0.5 * 1e-3)])  # creeps, never full speed


def test_trajectory_velocities_are_clipped_to_the_scaled_limit():
    f = _engaged(speed_scale=0.5)
    # Two points close in time but far apart: the gradient at the middle point exceeds vmax.
    t, pos, vel = f.filter_trajectory(np.array([1.0, 2.0, 3.0]),
                                      np.array([[0.4, 0.0], [-0.1, 0.0], [0.4, 0.0]]))
    assert np.all(np.abs(vel) <= 0.5 + 1e-12)


def test_trajectory_leaves_uncommanded_joints_at_their_command():
    f = _filter(commanded=[True, False])
    f.engage(np.array([0.0, 0.25]))
    _, pos, _ = f.filter_trajectory(np.array([0.5]), np.array([[0.3, -0.7]]))
    np.testing.assert_allclose(pos, [[0.0, 0.25], [0.3, 0.25]])


def test_a_single_point_trajectory_in_the_past_is_the_command_alone():
    f = _engaged()
    t, pos, vel = f.filter_trajectory(np.array([0.0]), np.array([[0.5, 0.5]]))
    np.testing.assert_array_equal(t, [0.0])
    np.testing.assert_array_equal(pos, [[0.0, 0.0]])
    np.testing.assert_array_equal(vel, [[0.0, 0.0]])


# --- braking helpers -------------------------------------------------------------------------

@pytest.mark.parametrize('dist,expected', [
    (0.0, 0.0),
    (-1.0, 0.0),  # behind: no room
    (0.0005, 0.05),  # less than one tick's worth (u dt = 0.001): land in one tick
    (0.001, 0.1),  # K = 1 exactly: v = u, then 0
    (0.003, 0.2),  # K = 2: 0.2, 0.1, 0 covers 0.003
    (0.0045, 0.25),  # between: the piecewise-linear inverse, s / (K + 1) + u K / 2
])
def test_stop_speed_inverts_the_discrete_braking_distance(dist, expected):
    # accel 10 rad/s^2 at dt 0.01 s: u = 0.1 rad/s lost per tick.
    got = float(_stop_speed(np.array([dist]), np.array([10.0]), DT)[0])
    assert got == pytest.approx(expected, abs=1e-12)


def test_stop_speed_brakes_within_the_distance_exactly():
    for dist in (0.0013, 0.0271, 0.5):
        v = float(_stop_speed(np.array([dist]), np.array([10.0]), DT)[0])
        travelled = 0.0
        while v > 1e-12:
            travelled += v * DT
            v = max(v - 10.0 * DT, 0.0)
        assert travelled <= dist + 1e-12


@pytest.mark.parametrize('scale,expected', [(0.5, 0.5), (1.7, 1.0), (-0.3, 0.0),
                                            (float('nan'), 0.0), (float('inf'), 0.0),
                                            (0.0, 0.0), (1.0, 1.0)])
def test_external_scale_is_clamped_and_non_finite_means_stop(scale, expected):
    assert _clamped_scale(scale) == expected


def test_disengaged_while_still_braking_never_re_anchors_onto_a_lagging_arm():
    f = _engaged()
    for _ in range(30):
        f.step(np.array([1.0, 1.0]), np.zeros(2), DT)
    f.disengage()
    cmd, vel = f.cmd.copy(), f.vel.copy()
    lagging = cmd - 2 * REANCHOR_TOLERANCE  # the arm behind its command, as arms are
    out = f.step(None, lagging, DT)
    # Braking on from the command (one tick at the decelerated speed), not a jump back.
    np.testing.assert_allclose(out.velocities, vel - 10.0 * DT)
    np.testing.assert_allclose(out.positions, cmd + (vel - 10.0 * DT) * DT)


def test_trajectory_is_clipped_at_the_lower_margin_too():
    f = _engaged()
    _, pos, _ = f.filter_trajectory(np.array([5.0]), np.array([[-3.0, -0.95]]))
    np.testing.assert_allclose(pos[1], [-0.9, -0.9])


def test_a_one_segment_trajectory_starts_at_its_segment_velocity():
    f = _engaged()
    _, _, vel = f.filter_trajectory(np.array([1.0]), np.array([[0.4, -0.2]]))
    np.testing.assert_allclose(vel, [[0.4, -0.2], [0.0, 0.0]])
