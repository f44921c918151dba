"""The vla_policy node on a real rclpy graph: sim robots that speak the real controllers'
topics and message types, cameras published by a test node, services and parameters called
from another node."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import State
from rclpy.lifecycle import TransitionCallbackReturn
from ros_harness import Recorder, RosHarness, start_policy_node, wait_for
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from vla_ros.ros.node.policy_node import VlaPolicyNode
from vla_ros.ros.sim_nodes import SimRobotNode

pytestmark = pytest.mark.ros

CASES = {  # robot, controller -> (topic, message type)
    ('xarm6', ''): ('/xarm6_traj_controller/joint_trajectory', JointTrajectory),
    ('fr3', 'forward_position_controller'): ('/forward_position_controller/commands',
                                             Float64MultiArray),
    ('ur5e', ''): ('/scaled_joint_trajectory_controller/joint_trajectory', JointTrajectory),
    ('agibot_g1', ''): ('/joint_command', JointState),
}


def start(ros: RosHarness, package, robot: str = 'xarm6', controller: str = '',
          activate: bool = True, **params) -> tuple[VlaPolicyNode, SimRobotNode]:
    sim = SimRobotNode(robot, controller, context=ros.context)
    ros.add(sim, own_executor=True)
    ros.start_cameras()
    overrides = {'model_path': str(package), 'robot': robot, 'controller': controller,
                 'instruction': 'pick up the red block', 'max_staleness_ms': 1000.0,
                 'speed_scale': 1.0, **params}
    return start_policy_node(ros, overrides, activate=activate), sim


def corrupt_copy(package, dst):
    """A copy of `package` with one graph byte flipped: same size, so it passes the quick
    checks of a swap request and fails the hash check while loading."""
    shutil.copytree(package, dst)
    graph = dst / 'graphs' / 'head_step.onnx'
    data = bytearray(graph.read_bytes())
    data[-5] ^= 0xFF
    graph.write_bytes(bytes(data))
    return dst


def engage(ros: RosHarness) -> SetBool.Response:
    return ros.call(SetBool, '/vla_policy/engage', SetBool.Request(data=True))


@pytest.mark.parametrize('robot,controller', list(CASES), ids=[r for r, _ in CASES])
def test_images_and_joint_states_in_commands_out_on_the_real_controller(
        ros, robot_packages, robot, controller):
    topic, msg_type = CASES[(robot, controller)]
    got = ros.collect(msg_type, topic)
    node, sim = start(ros, robot_packages[robot], robot, controller)
    assert engage(ros).success
    before = sim.arm.state()[0]
    assert wait_for(lambda: node.worker.stats.inferences >= 3 and len(got) >= 3, 20)
    assert wait_for(lambda: np.max(np.abs(sim.arm.state()[0] - before)) > 1e-3, 10)
    msg = got[-1]
    joints = sim.arm.names
    if msg_type is Float64MultiArray:
        assert len(msg.data) == len(joints)
    elif msg_type is JointState:
        assert list(msg.name) == list(joints) and len(msg.position) == len(joints)
    else:
        assert list(msg.joint_names) == list(joints) and msg.points
    assert node.worker.stats.failures == 0


def test_no_motion_until_engaged(ros, robot_packages):
    node, sim = start(ros, robot_packages['fr3'], 'fr3', 'forward_position_controller')
    before = sim.arm.state()[0]
    assert wait_for(lambda: node.worker.stats.inferences >= 2, 20)
    assert np.allclose(sim.arm.state()[0], before, atol=1e-9)
    assert node._last_cmd.state == 'disengaged'


def test_action_chunks_are_published_with_the_observation_stamp(ros, robot_packages):
    chunks = ros.collect(JointTrajectory, '/vla_policy/action_chunk')
    node, _ = start(ros, robot_packages['xarm6'])
    assert wait_for(lambda: len(chunks) >= 2, 20)
    msg = chunks[-1]
    assert list(msg.joint_names) == [f'joint{i}' for i in range(1, 7)]
    assert len(msg.points) == 4
    # The observation stamp is the earliest camera header stamp of the frames it was made
    # from: one of the stamps the test published (to the float64 seconds round trip).
    stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
    assert min(abs(stamp - s) for s in list(ros.camera_stamps)) < 1e-6, stamp


def test_hot_swap_to_a_good_package_keeps_commanding(ros, robot_packages, tmp_path):
    other = tmp_path / 'other'
    shutil.copytree(robot_packages['xarm6'], other)
    got = ros.collect(JointTrajectory, '/xarm6_traj_controller/joint_trajectory')
    node, _ = start(ros, robot_packages['xarm6'])
    assert engage(ros).success
    assert wait_for(lambda: node.worker.stats.inferences >= 2, 20)
    result = ros.set_params('vla_policy', model_path=str(other))[0]
    assert result.successful, result.reason
    assert wait_for(lambda: node._swap['state'] == 'swapped', 30), node._swap
    assert node.worker.stats.swaps == 1 and node.model_path == str(other)
    n = len(got)
    assert wait_for(lambda: len(got) > n + 3, 10)
    # Loading competes for the cores; a brief hold while the plan runs dry is allowed, but
    # tracking resumes on the new model.
    assert wait_for(lambda: node._last_cmd.state == 'engaged', 10), node._last_cmd


def test_hot_swap_rejects_an_incompatible_package_with_the_reason(ros, robot_packages):
    node, _ = start(ros, robot_packages['xarm6'])
    result = ros.set_params('vla_policy', model_path=str(robot_packages['ur5e']))[0]
    assert not result.successful
    assert 'shoulder_pan_joint' in result.reason and 'joint1' in result.reason
    assert node.model_path == str(robot_packages['xarm6'])


def test_hot_swap_rejects_a_directory_without_a_manifest(ros, robot_packages, tmp_path):
    start(ros, robot_packages['xarm6'])
    result = ros.set_params('vla_policy', model_path=str(tmp_path))[0]
    assert not result.successful and 'manifest.json' in result.reason


def test_a_corrupt_package_fails_late_and_the_old_model_keeps_serving(ros, robot_packages,
                                                                     tmp_path):
    bad = corrupt_copy(robot_packages['xarm6'], tmp_path / 'bad')
    node, _ = start(ros, robot_packages['xarm6'])
    result = ros.set_params('vla_policy', model_path=str(bad))[0]
    assert result.successful  # accepted: only the full load can see the corruption
    assert wait_for(lambda: node._swap['state'] == 'failed', 30)
    assert 'sha256' in node._swap['detail']
    n = node.worker.stats.inferences
    assert wait_for(lambda: node.worker.stats.inferences > n + 2, 20)
    assert node.worker.stats.model_name == 'tiny-xarm6'


def test_configure_fails_clearly_when_joint_names_do_not_match(ros, robot_packages):
    node, _ = start(ros, robot_packages['ur5e'], 'xarm6', activate=False)
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert 'shoulder_pan_joint' in node._fault and 'joint1' in node._fault
    assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED


def test_a_camera_that_stops_ends_in_a_hold_and_a_diagnostic(ros, robot_packages):
    diags = ros.collect(DiagnosticArray, '/diagnostics')
    node, _ = start(ros, robot_packages['xarm6'], max_staleness_ms=300.0, control_process=False)
    rec = Recorder(node)
    assert engage(ros).success
    assert wait_for(lambda: node._last_cmd is not None and node._last_cmd.state == 'engaged',
                    20)
    rec.mark_fault()
    ros.camera_on.clear()
    assert wait_for(lambda: node._last_cmd.state == 'holding', 5)
    assert 'stale' in node._last_cmd.reason
    assert wait_for(lambda: any(s.level == DiagnosticStatus.WARN and 'stale' in s.message
                                for d in diags for s in d.status), 5)
    ros.camera_on.set()
    recovered = wait_for(lambda: node._last_cmd.state == 'engaged', 10)
    rec.report('camera stops (stale after 300 ms = 30 ticks; trajectory)', recovered)
    assert recovered


def test_malformed_images_are_logged_and_the_node_keeps_running(ros, robot_packages):
    node, _ = start(ros, robot_packages['xarm6'])
    ros.malformed = True
    assert wait_for(lambda: node.slots.errors.count >= 3, 10)
    assert 'encoding' in node.slots.errors.last
    ros.malformed = False
    n = node.worker.stats.inferences
    assert wait_for(lambda: node.worker.stats.inferences > n + 1, 20)
    assert node._state_machine.current_state[0] == State.PRIMARY_STATE_ACTIVE


def test_estop_during_motion_latches_until_reset(ros, robot_packages):
    node, sim = start(ros, robot_packages['fr3'], 'fr3', 'forward_position_controller')
    assert engage(ros).success
    assert wait_for(lambda: np.max(np.abs(sim.arm.velocity)) > 1e-3, 20)
    pub = ros.io.create_publisher(Bool, '/vla_policy/estop', 10)
    pub.publish(Bool(data=True))
    assert wait_for(lambda: node._last_cmd.state == 'estop', 5)
    assert wait_for(lambda: np.max(np.abs(node._last_cmd.velocities)) < 1e-9, 5)
    assert not engage(ros).success  # refused while latched
    assert ros.call(Trigger, '/vla_policy/reset', Trigger.Request()).success
    assert engage(ros).success


def test_an_impossible_deadline_still_yields_actions_from_the_first_exit(ros, robot_packages):
    node, _ = start(ros, robot_packages['xarm6'], deadline_ms=0.001, policy_mode='full')
    assert wait_for(lambda: node.worker.stats.inferences >= 2, 20)
    assert node.worker.stats.last_exit_layer == 1  # the first exit of layers (1, 2, 3)


def test_invalid_parameters_are_rejected_with_the_reason(ros, robot_packages):
    start(ros, robot_packages['xarm6'])
    bad = ros.set_params('vla_policy', speed_scale=3.0)[0]
    assert not bad.successful and 'speed_scale' in bad.reason
    fixed = ros.set_params('vla_policy', robot='ur5e')[0]
    assert not fixed.successful and 'cannot change while configured' in fixed.reason
    ok = ros.set_params('vla_policy', merge_strategy='temporal_ensemble')[0]
    assert ok.successful


def test_joint_states_with_nan_are_rejected(ros, robot_packages):
    node, _ = start(ros, robot_packages['xarm6'])
    pub = ros.io.create_publisher(JointState, '/joint_states', 10)
    before = node.slots.errors.count
    pub.publish(JointState(name=['joint1'], position=[float('nan')]))
    assert wait_for(lambda: node.slots.errors.count > before, 5)
    assert 'non-finite' in node.slots.errors.last


def test_an_exception_in_a_callback_holds_and_the_node_keeps_spinning(ros, robot_packages):
    # The control tick that fails is the node's own (its adapter is patched here).
    node, _ = start(ros, robot_packages['fr3'], 'fr3', 'forward_position_controller',
                    control_process=False)
    assert engage(ros).success
    assert wait_for(lambda: node._last_cmd is not None and node._last_cmd.state == 'engaged',
                    20)
    original = node.adapter.joint_positions

    def broken(*_):
        raise RuntimeError('driver sent garbage')

    node.adapter.joint_positions = broken
    assert wait_for(lambda: node._callback_errors >= 3, 5)
    node.adapter.joint_positions = original
    assert wait_for(lambda: node._last_cmd.state == 'holding', 5)
    assert 'driver sent garbage' in node._last_cmd.reason
    assert wait_for(lambda: node._last_cmd.state == 'engaged', 10)  # resumes, never crashed


def test_throttled_logging_at_several_levels_never_raises(ros, robot_packages):
    node, _ = start(ros, robot_packages['xarm6'], activate=False)
    for level in ('error', 'warn', 'info', 'error'):
        node._log_every('same-key', 0.0, level, f'message at {level}')


def test_rtc_guided_on_a_package_without_the_vjp_graph_is_rejected_saying_re_export(
        ros, robot_packages):
    start(ros, robot_packages['xarm6'])
    result = ros.set_params('vla_policy', merge_strategy='rtc_guided')[0]
    assert not result.successful and '--rtc-vjp' in result.reason
