"""Robot adapters and the safety filter (no ROS graph)."""

import numpy as np
import pytest

from vla_ros.adapters.adapter import AdapterError, RobotAdapter
from vla_ros.adapters.robots import ROBOTS, robot_spec
from vla_ros.adapters.safety import SafetyConfig, SafetyFilter

XARM = tuple(f'joint{i}' for i in range(1, 7))


@pytest.mark.parametrize('name', sorted(ROBOTS))
def test_every_robot_has_consistent_limits_and_a_default_controller(name):
    spec = robot_spec(name)
    assert spec.default_controller in spec.controllers
    assert len(set(spec.joint_names)) == len(spec.joints)
    for j in spec.joints:
        assert j.lower < j.upper and j.velocity > 0 and j.acceleration > 0


def test_real_joint_names_and_controller_topics():
    assert robot_spec('xarm6').joint_names == XARM
    assert robot_spec('xarm6').controllers['xarm6_traj_controller'].topic == \
        'xarm6_traj_controller/joint_trajectory'
    assert robot_spec('fr3').joint_names[0] == 'fr3_joint1'
    assert robot_spec('panda').joint_names[6] == 'panda_joint7'
    ur = robot_spec('ur5e')
    assert ur.joint_names[2] == 'elbow_joint' and ur.joint('elbow_joint').upper == \
        pytest.approx(np.pi)
    assert ur.controllers[ur.default_controller].topic == \
        'scaled_joint_trajectory_controller/joint_trajectory'
    g1 = robot_spec('agibot_g1')
    assert g1.controllers['joint_command'].mode == 'joint_state'
    assert 'idx27_arm_l_joint7' in g1.joint_names and 'idx81_gripper_r_outer_joint1' in \
        g1.joint_names


@pytest.mark.parametrize('robot', ['xarm6', 'fr3', 'panda', 'ur5', 'ur5e', 'agibot_g1'])
def test_every_topic_of_a_robot_is_relative_so_namespaces_move_it(robot):
    spec = robot_spec(robot)
    topics = [c.topic for c in spec.controllers.values()] + [
        spec.joint_state_topic, spec.speed_scaling_topic, spec.program_running_topic] + [
        g.action_server for g in spec.grippers]
    assert [t for t in topics if t.startswith('/')] == []


def test_state_is_assembled_by_name_not_index():
    a = RobotAdapter(robot_spec('xarm6'), XARM, XARM)
    names = ['joint3', 'drive_joint', 'joint1', 'joint6', 'joint2', 'joint5', 'joint4']
    pos = [3.0, 0.5, 1.0, 6.0, 2.0, 5.0, 4.0]
    np.testing.assert_array_equal(a.state_vector(names, pos), [1, 2, 3, 4, 5, 6])


def test_missing_joint_in_joint_states_names_it():
    a = RobotAdapter(robot_spec('xarm6'), XARM, XARM)
    with pytest.raises(KeyError, match='joint6'):
        a.state_vector(list(XARM[:5]), [0.0] * 5)


def test_name_mismatch_is_a_clear_configure_error():
    with pytest.raises(AdapterError, match=r"state names \['shoulder_pan_joint'\].*joint1"):
        RobotAdapter(robot_spec('xarm6'), ('shoulder_pan_joint',), XARM)


def test_gripper_action_maps_onto_the_gripper_joint_range():
    a = RobotAdapter(robot_spec('xarm6'), XARM + ('gripper',), XARM + ('gripper',))
    target, grippers = a.joint_targets(np.array([0.1] * 6 + [0.5]), np.zeros(6))
    np.testing.assert_allclose(target, [0.1] * 6)
    assert grippers[0].gripper.joint == 'drive_joint'
    assert grippers[0].position == pytest.approx(0.425)  # half way to 0.85 (closed)
    # the state reads the gripper joint back into the model's range
    state = a.state_vector(list(XARM) + ['drive_joint'], [0.0] * 6 + [0.85])
    assert state[-1] == pytest.approx(1.0)


def test_agibot_grippers_are_commanded_joints():
    spec = robot_spec('agibot_g1')
    arms = tuple(n for n in spec.joint_names if 'arm' in n)
    a = RobotAdapter(spec, arms, arms + ('left_gripper',))
    target, separate = a.joint_targets(np.array([0.0] * 14 + [1.0]), np.zeros(len(spec.joints)))
    assert not separate
    assert target[spec.joint_names.index('idx41_gripper_l_outer_joint1')] == 0.0  # (1-1)*0.785


def _filter(**kw) -> SafetyFilter:
    return SafetyFilter([-1.0, -1.0], [1.0, 1.0], [1.0, 1.0], [10.0, 10.0],
                        SafetyConfig(**{'position_margin': 0.05, **kw}))


def test_no_motion_before_engage():
    f = _filter()
    cmd = f.step(np.array([0.5, 0.5]), np.array([0.1, 0.2]), 0.01)
    np.testing.assert_allclose(cmd.positions, [0.1, 0.2])
    assert cmd.state == 'disengaged'


def test_disengaged_hold_follows_an_arm_moved_by_something_else_but_resists_small_drift():
    f = _filter()
    f.engage(np.zeros(2))
    for _ in range(50):
        f.step(np.array([0.3, 0.3]), np.zeros(2), 0.01)
    f.disengage()
    for _ in range(200):  # brake to rest where the command is
        cmd = f.step(None, np.zeros(2) + f.cmd, 0.01)
    held = cmd.positions.copy()
    assert not np.any(cmd.velocities)
    # a small sag is resisted: the hold stays
    cmd = f.step(None, held - 0.01, 0.01)
    np.testing.assert_allclose(cmd.positions, held)
    # moved far (by hand, another controller, a simulator reset): hold there, never pull back
    cmd = f.step(None, np.array([-0.5, 0.2]), 0.01)
    np.testing.assert_allclose(cmd.positions, [-0.5, 0.2])
    # while braking (not at rest) the hold is not re-anchored
    g = _filter()
    g.engage(np.zeros(2))
    for _ in range(30):
        g.step(np.array([0.9, 0.9]), np.zeros(2), 0.01)
    g.disengage()
    moving = g.step(None, np.array([-0.5, -0.5]), 0.01)
    assert np.any(moving.velocities) and np.all(moving.positions > 0)


def test_engaged_motion_respects_velocity_and_acceleration_limits():
    f = _filter()
    f.engage(np.zeros(2))
    dt, prev_v, prev_p = 0.01, np.zeros(2), np.zeros(2)
    for _ in range(200):
        cmd = f.step(np.array([0.9, -0.9]), np.zeros(2), dt)
        v = (cmd.positions - prev_p) / dt
        assert np.all(np.abs(v) <= 1.0 + 1e-9)
        assert np.all(np.abs(v - prev_v) <= 10.0 * dt + 1e-9)
        prev_v, prev_p = v, cmd.positions
    np.testing.assert_allclose(cmd.positions, [0.9, -0.9], atol=1e-9)  # reached, no overshoot


def test_targets_are_clipped_inside_the_limits_with_margin():
    f = _filter()
    f.engage(np.zeros(2))
    for _ in range(500):
        cmd = f.step(np.array([5.0, -5.0]), np.zeros(2), 0.01)
    np.testing.assert_allclose(cmd.positions, [0.95, -0.95])


def test_speed_scale_slows_motion():
    f = _filter(speed_scale=0.25)
    f.engage(np.zeros(2))
    for _ in range(100):
        cmd = f.step(np.array([0.9, 0.9]), np.zeros(2), 0.01)
    assert np.max(np.abs(cmd.velocities)) <= 0.25 + 1e-9


def test_non_finite_target_holds_without_a_jump():
    f = _filter()
    f.engage(np.zeros(2))
    for _ in range(30):
        moving = f.step(np.array([0.9, 0.9]), np.zeros(2), 0.01)
    cmd = f.step(np.array([np.nan, 0.0]), np.zeros(2), 0.01)
    assert cmd.state == 'holding' and cmd.reason == 'non-finite target'
    assert np.all(np.abs(cmd.velocities - moving.velocities) <= 10.0 * 0.01 + 1e-9)
    for _ in range(50):
        cmd = f.step(None, np.zeros(2), 0.01, fault='camera stale')
    np.testing.assert_allclose(cmd.velocities, 0.0)  # braked to a standstill


def test_fault_holds_and_recovers_when_cleared():
    f = _filter()
    f.engage(np.zeros(2))
    assert f.step(np.array([0.5, 0.5]), np.zeros(2), 0.01, fault='stale').state == 'holding'
    assert f.step(np.array([0.5, 0.5]), np.zeros(2), 0.01).state == 'engaged'


def test_estop_latches_until_reset_and_reengage():
    f = _filter()
    f.engage(np.zeros(2))
    f.estop()
    assert f.step(np.array([0.5, 0.5]), np.zeros(2), 0.01).state == 'estop'
    with pytest.raises(RuntimeError, match='reset'):
        f.engage(np.zeros(2))
    f.reset()
    assert f.step(np.array([0.5, 0.5]), np.zeros(2), 0.01).state == 'disengaged'
    f.engage(np.zeros(2))
    assert f.step(np.array([0.5, 0.5]), np.zeros(2), 0.01).state == 'engaged'


def test_trajectory_is_slowed_to_the_velocity_limit_and_starts_at_the_command():
    f = _filter()
    f.engage(np.array([0.0, 0.0]))
    times, pos, vel = f.filter_trajectory(np.array([0.1, 0.2]), np.array([[0.5, 0.0],
                                                                          [0.9, 0.0]]))
    np.testing.assert_allclose(pos[0], [0.0, 0.0])
    assert times[1] >= 0.5 - 1e-9 and times[2] - times[1] >= 0.4 - 1e-9  # 1 rad/s at most
    assert np.all(np.abs(vel) <= 1.0 + 1e-9)
    f.disengage()
    assert f.filter_trajectory(np.array([0.1]), np.array([[0.5, 0.0]])) is None
