"""The safety filter's reviewed cases, pinned: a full-speed stop at a target, a target
jumping closer than the stopping distance, acceleration_scale lowered near a limit, a
hold at speed, landing on the goal up to rounding. The properties over random episodes
are in test_safety_limits.py."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from vla_ros.adapters.safety import SafetyConfig, SafetyFilter

REL = 1e-9  # relative float tolerance on every limit

LIMIT, VMAX, AMAX, MARGIN = 1.0, 1.0, 10.0, 0.05


def _arm(**kw) -> SafetyFilter:
    f = SafetyFilter([-LIMIT], [LIMIT], [VMAX], [AMAX], SafetyConfig(MARGIN, **kw))
    f.engage(np.zeros(1))
    return f


def _drive(f, targets, dt, before_tick=None):
    """Positions and velocities, the starting state first; before_tick(k, f) may change f."""
    xs, vs = [f.cmd[0]], [f.vel[0]]
    for k, target in enumerate(targets):
        if before_tick:
            before_tick(k, f)
        cmd = f.step(None if target is None else np.array([target]), f.cmd, dt)
        xs.append(cmd.positions[0])
        vs.append(cmd.velocities[0])
    return np.array(xs), np.array(vs)


def test_full_speed_approach_stops_at_the_target_within_the_acceleration_limit():
    # The reported case: at 250 Hz the old braking curve and its clamp onto the goal stopped
    # the last step 12.5% too hard (far harder when the goal moved in closer, below).
    dt = 0.004
    x, v = _drive(_arm(), [0.85] * 500, dt)
    assert np.max(v) == pytest.approx(VMAX)  # it did get to full speed
    assert np.max(np.abs(np.diff(v))) <= AMAX * dt * (1 + REL)
    assert np.max(np.abs(np.diff(np.diff(x) / dt))) <= AMAX * dt * (1 + REL) + 1e-10
    assert np.max(x) <= 0.85 and x[-1] == 0.85


def test_target_jumping_just_ahead_of_a_fast_joint_is_overshot_not_stopped_at_in_one_tick():
    dt = 0.01
    f = _arm()
    _drive(f, [0.9] * 60, dt)
    near = float(f.cmd[0]) + 0.01  # much closer than its stopping distance at 1 rad/s
    x, v = _drive(f, [near] * 200, dt)
    assert np.max(np.abs(np.diff(v))) <= AMAX * dt * (1 + REL)
    assert np.max(x) > near and x[-1] == near


def test_acceleration_scale_lowered_near_the_limit_brakes_at_the_new_limit_inside_it():
    dt, target = 0.01, 0.9
    f = _arm()
    lowered = []

    def lower_when_close(k, f):
        if not lowered and f.cmd[0] >= 0.45:  # stopping at 1 rad/s^2 now takes 0.5 rad
            f.config = replace(f.config, acceleration_scale=0.1)
            lowered.append(k + 1)  # index into v of the first tick under the new limit

    x, v = _drive(f, [target] * 600, dt, lower_when_close)
    k = lowered[0]
    assert np.max(np.abs(np.diff(v[:k]))) <= AMAX * dt * (1 + REL)
    assert np.max(np.abs(np.diff(v[k - 1:]))) <= 0.1 * AMAX * dt * (1 + REL)
    assert np.max(x) > target  # it could not stop at the target any more
    assert np.max(x) < LIMIT  # but stopped short of the hard limit
    assert x[-1] == target


def test_acceleration_scale_lowered_too_late_brakes_only_as_hard_as_the_hard_limit_needs():
    dt = 0.01
    f = _arm()
    lowered = []

    def lower_late(k, f):
        if not lowered and f.cmd[0] >= 0.7:  # 0.3 rad left, 0.5 rad needed at 1 rad/s^2
            f.config = replace(f.config, acceleration_scale=0.1)
            lowered.append(k + 1)

    x, v = _drive(f, [0.9] * 800, dt, lower_late)
    k = lowered[0]
    needed = v[k - 1] ** 2 / (2 * (LIMIT - x[k - 1]))  # uniform braking to the hard limit
    decel = -np.diff(v[k - 1:])
    assert np.all(x <= LIMIT)
    assert np.max(decel[v[k:] > 0]) <= 1.25 * needed * dt  # no hard stop, near uniform
    assert np.max(np.abs(np.diff(v))) <= AMAX * dt * (1 + REL)
    assert x[-1] == 0.9


def test_goal_reached_up_to_rounding_is_landed_on_exactly():
    # A state on the braking curve whose last step, in floats, ends 2e-16 past the goal.
    f = _arm()
    f.cmd, f.vel = np.array([0.9491173071431868]), np.array([0.1882692856813399])
    cmd = f.step(np.array([1.03]), f.cmd, 0.01)
    assert cmd.positions[0] == LIMIT - MARGIN


def test_hold_during_fast_motion_decelerates_at_the_limit_to_a_standstill():
    dt = 0.01
    f = _arm()
    _drive(f, [0.9] * 30, dt)
    assert f.vel[0] == pytest.approx(VMAX)
    x, v = _drive(f, [None] * 30, dt)
    slowing = -np.diff(v)
    fast = v[:-1] > AMAX * dt  # more than one tick's worth of speed left
    np.testing.assert_allclose(slowing[fast], AMAX * dt, rtol=1e-9)  # at the limit
    assert np.all((slowing[~fast] >= 0) & (slowing[~fast] <= AMAX * dt * (1 + REL)))
    assert v[-1] == 0
    np.testing.assert_allclose(np.diff(x) / dt, v[1:], atol=1e-12)  # no position jump


def test_speed_scale_lowered_mid_motion_slows_at_the_acceleration_limit():
    dt = 0.01
    f = _arm()
    _drive(f, [-0.9] * 30, dt)
    f.config = replace(f.config, speed_scale=0.2)
    x, v = _drive(f, [-0.9] * 20, dt)
    slowing = v[1:] < -0.2 - 1e-12
    np.testing.assert_allclose(np.diff(v)[slowing], AMAX * dt, rtol=1e-9)
    assert np.all(np.abs(v[np.argmax(~slowing) + 1:]) <= 0.2 + 1e-12)


def test_engage_while_still_braking_continues_from_the_moving_command():
    dt = 0.01
    f = _arm()
    _drive(f, [0.9] * 30, dt)
    f.disengage()
    _drive(f, [None] * 3, dt)
    moving = f.vel.copy()
    f.engage(f.cmd)
    cmd = f.step(np.array([0.9]), f.cmd, dt)
    assert abs(cmd.velocities[0] - moving[0]) <= AMAX * dt * (1 + REL)


def test_consecutive_non_finite_targets_keep_holding():
    dt = 0.01
    f = _arm()
    _drive(f, [0.9] * 30, dt)
    for _ in range(3):
        cmd = f.step(np.array([np.nan]), f.cmd, dt)
        assert cmd.state == 'holding' and cmd.reason == 'non-finite target'
        assert np.all(np.isfinite(cmd.positions))


def test_non_finite_external_scale_slows_to_a_stop():
    dt = 0.01
    f = _arm()
    _drive(f, [0.9] * 30, dt)
    for _ in range(20):
        cmd = f.step(np.array([0.9]), f.cmd, dt, external_scale=float('nan'))
    assert np.all(np.isfinite(cmd.positions)) and cmd.velocities[0] == 0


def test_non_positive_velocity_or_acceleration_limits_are_refused():
    with pytest.raises(ValueError, match='positive'):
        SafetyFilter([-1.0], [1.0], [1.0], [0.0], SafetyConfig())
