"""The vla_policy node's grippers on a real rclpy graph: the model's gripper value becomes a
control_msgs/GripperCommand goal on each driver's action (the sim robot's real action
servers), a fault or deactivate applies the configured behaviour, AgiBot's gripper joints go
out on /joint_command, namespaces apply, failures are on ~/status."""

from __future__ import annotations

import importlib.util
import shutil
import time
from dataclasses import replace

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from lifecycle_msgs.msg import State
from rclpy.action import get_action_client_names_and_types_by_node
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from ros_harness import RosHarness, start_policy_node, wait_for
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import SetBool

from vla_ros.ros.sim_nodes import SimRobotNode

pytestmark = pytest.mark.ros

CLOSED = {'xarm6': 0.85, 'fr3': 0.0, 'ur5e': 0.8}
OPEN = {'xarm6': 0.0, 'fr3': 0.04, 'ur5e': 0.0}


@pytest.fixture(scope='session')
def gripper_package(robot_packages, tmp_path_factory):
    """(robot, fraction closed) -> a copy of the robot's package whose model also commands
    and reads the gripper, its gripper action pinned to that value (bounds min = max)."""
    from vla_ros.runtime.package.loader import load_package, update_manifest
    from vla_ros.runtime.package.manifest import ActionSpec, Normalization, SpaceSpec

    made = {}

    def make(robot: str, closure) -> str:
        if (robot, closure) in made:
            return made[(robot, closure)]
        root = tmp_path_factory.mktemp(f'gripper-{robot}') / 'package'
        shutil.copytree(robot_packages[robot], root)
        pkg = load_package(root)
        m = pkg.manifest
        if robot == 'agibot_g1':  # its two gripper entries are already the last two
            names, pinned = m.action.names, tuple(closure)
        else:
            names, pinned = m.action.names + ('gripper',), (closure,)
        arm = len(names) - len(pinned)
        norm = Normalization('bounds', {'min': (-0.3,) * arm + pinned,
                                        'max': (0.3,) * arm + pinned})
        m = replace(m, state=SpaceSpec(names, 16, Normalization()),
                    action=ActionSpec(names, 16, norm, chunk_len=m.action.chunk_len,
                                      dt_s=0.1, mode='absolute'))
        update_manifest(pkg, m)
        made[(robot, closure)] = str(root)
        return str(root)

    return make


def start(ros: RosHarness, package: str, robot: str, stroke_s: float = 0.3,
          namespace: str = '', activate: bool = True, **params):
    sim = SimRobotNode(robot, context=ros.context, namespace=namespace, parameter_overrides=[
        Parameter('gripper_stroke_s', value=stroke_s)])
    ros.add(sim, own_executor=True)
    ros.start_cameras(namespace=namespace)
    overrides = {'model_path': package, 'robot': robot, 'instruction': 'pick up the red block',
                 'max_staleness_ms': 1000.0, 'speed_scale': 1.0, 'gripper_min_dwell_s': 0.2,
                 **params}
    return start_policy_node(ros, overrides, namespace, activate=activate), sim


def engage(ros: RosHarness, namespace: str = '') -> None:
    res = ros.call(SetBool, f'{namespace}/vla_policy/engage', SetBool.Request(data=True))
    assert res.success, res.message


def estop(ros: RosHarness) -> None:
    pub = ros.io.create_publisher(Bool, '/vla_policy/estop', 10)
    assert wait_for(lambda: pub.get_subscription_count() > 0, 20)
    pub.publish(Bool(data=True))


def outcomes(server) -> list[str]:
    return [g['outcome'] for g in server.goals]


@pytest.mark.parametrize('robot', ['xarm6', 'fr3', 'ur5e'])
def test_the_models_gripper_value_is_one_goal_on_the_drivers_action(ros, gripper_package,
                                                                   robot):
    node, sim = start(ros, gripper_package(robot, 1.0), robot, gripper_max_effort=30.0)
    server = sim.gripper_servers['gripper']
    engage(ros)
    assert wait_for(lambda: outcomes(server) == ['succeeded'], 20), server.goals
    assert server.goals[0]['position'] == pytest.approx(CLOSED[robot])
    assert server.goals[0]['max_effort'] == pytest.approx(30.0)
    assert sim.grippers['gripper'].position == pytest.approx(CLOSED[robot])
    # The model reads the gripper back from joint_states: closed is 1.
    assert wait_for(lambda: abs(node._observe().state[-1] - 1.0) < 1e-6, 20)
    time.sleep(0.5)
    assert len(server.goals) == 1  # the command did not change: nothing more was sent
    assert node._gripper_channels[0][1].state == 'succeeded'


def test_an_estop_opens_the_gripper_when_configured_pre_empting_the_close(ros,
                                                                         gripper_package):
    node, sim = start(ros, gripper_package('xarm6', 1.0), 'xarm6', stroke_s=4.0)
    server = sim.gripper_servers['gripper']
    engage(ros)
    assert wait_for(lambda: outcomes(server) == [''], 20)  # closing, slowly
    result = ros.set_params('vla_policy', gripper_fault_behavior='open')[0]  # while active
    assert result.successful, result.reason
    estop(ros)
    assert wait_for(lambda: outcomes(server) == ['canceled', 'succeeded'], 10), server.goals
    assert server.goals[1]['position'] == pytest.approx(OPEN['xarm6'])
    assert node._last_cmd.state == 'estop'


def test_an_estop_holds_the_gripper_when_configured_to_hold(ros, gripper_package):
    node, sim = start(ros, gripper_package('ur5e', 1.0), 'ur5e',
                      gripper_fault_behavior='hold')
    server = sim.gripper_servers['gripper']
    engage(ros)
    assert wait_for(lambda: outcomes(server) == ['succeeded'], 20)
    estop(ros)
    assert wait_for(lambda: node._last_cmd.state == 'estop', 20)
    time.sleep(0.5)
    assert outcomes(server) == ['succeeded']  # no goal after the e-stop
    assert sim.grippers['gripper'].position == pytest.approx(CLOSED['ur5e'])


def test_stale_joint_states_close_the_gripper_when_configured(ros, gripper_package):
    paused = []
    pub = ros.io.create_publisher(JointState, '/relay/joint_states', 10)
    ros.io.create_subscription(JointState, '/joint_states',
                               lambda m: None if paused else pub.publish(m), 10)
    # Only the joint states may fault here: a plan that runs out on a loaded machine would
    # close the gripper too.
    node, sim = start(ros, gripper_package('fr3', 0.0), 'fr3', gripper_fault_behavior='close',
                      joint_states_topic='/relay/joint_states', max_staleness_ms=300.0,
                      controller='forward_position_controller', hold_on_stale_inference=False)
    server = sim.gripper_servers['gripper']
    engage(ros)
    # (The hold before the first plan arrives is a hold too: it may close first.)
    assert wait_for(lambda: server.goals and server.goals[-1]['outcome'] == 'succeeded' and
                    server.goals[-1]['position'] == pytest.approx(OPEN['fr3']), 20), \
        server.goals
    sent = len(server.goals)
    paused.append(True)
    assert wait_for(lambda: len(server.goals) == sent + 1, 20), server.goals
    assert server.goals[-1]['position'] == pytest.approx(CLOSED['fr3'])
    assert node._last_cmd.state == 'holding' and 'joint_states' in node._last_cmd.reason


def test_deactivate_sends_the_fault_behavior(ros, gripper_package):
    node, sim = start(ros, gripper_package('fr3', 1.0), 'fr3', gripper_fault_behavior='open',
                      controller='forward_position_controller')
    server = sim.gripper_servers['gripper']
    engage(ros)
    # (The hold before the first plan arrives is a hold too: it may open first.)
    assert wait_for(lambda: server.goals and server.goals[-1]['outcome'] == 'succeeded' and
                    server.goals[-1]['position'] == pytest.approx(CLOSED['fr3']), 20), \
        server.goals
    sent = len(server.goals)
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert wait_for(lambda: len(server.goals) == sent + 1, 20), server.goals
    assert server.goals[-1]['position'] == pytest.approx(OPEN['fr3'])


def test_configure_creates_and_cleanup_destroys_the_gripper_action_client(ros,
                                                                        gripper_package):
    # A namespace of its own: a vla_policy node of an earlier test in this ROS domain can
    # linger in the graph until its participant's lease runs out.
    def clients():
        return [n for n, _ in get_action_client_names_and_types_by_node(
            ros.io, 'vla_policy', '/cleanup')]

    node, _ = start(ros, gripper_package('xarm6', 1.0), 'xarm6', namespace='/cleanup')
    assert wait_for(lambda: clients() == ['/cleanup/xarm_gripper/gripper_action'], 20), \
        clients()
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert node._gripper_channels == []
    assert wait_for(lambda: clients() == [], 20), clients()


def test_agibot_gripper_joints_are_commanded_on_joint_command(ros, gripper_package):
    got = ros.collect(JointState, '/joint_command')
    # Left gripper open (joint 0.785), right closed (0): the sim starts both at 0.
    node, sim = start(ros, gripper_package('agibot_g1', (0.0, 1.0)), 'agibot_g1')
    engage(ros)
    left, right = 'idx41_gripper_l_outer_joint1', 'idx81_gripper_r_outer_joint1'

    def commanded(name):
        return got[-1].position[list(got[-1].name).index(name)] if got else None

    assert wait_for(lambda: got and commanded(left) > 0.7, 20), commanded(left)
    assert commanded(right) == pytest.approx(0.0, abs=0.03)
    i = sim.arm.names.index(left)
    assert wait_for(lambda: sim.arm.state()[0][i] > 0.7, 20)
    assert node._gripper_channels == []  # no driver action: joints only


def test_a_namespaced_node_reaches_the_namespaced_gripper_server(ros, gripper_package):
    node, sim = start(ros, gripper_package('xarm6', 1.0), 'xarm6', namespace='/robot1')
    server = sim.gripper_servers['gripper']
    channel = node._gripper_channels[0][1]
    assert channel.action_names == ['/robot1/xarm_gripper/gripper_action']
    engage(ros, '/robot1')
    assert wait_for(lambda: outcomes(server) == ['succeeded'], 20), server.goals


def test_a_rejected_gripper_goal_is_on_status_and_the_arm_keeps_going(ros, gripper_package):
    statuses = ros.collect(DiagnosticStatus, '/vla_policy/status')
    node, sim = start(ros, gripper_package('ur5e', 1.0), 'ur5e')
    sim.gripper_servers['gripper'].accepting = False
    engage(ros)

    def reported():
        for st in list(statuses):
            values = {kv.key: kv.value for kv in st.values}
            if values.get('gripper_goal_state') == 'rejected':
                return st
        return None

    assert wait_for(lambda: reported() is not None, 20)
    st = reported()
    values = {kv.key: kv.value for kv in st.values}
    assert st.level == DiagnosticStatus.WARN and 'rejected' in st.message
    assert values['gripper_failures'] == '1'
    assert values['gripper_action'] == '/robotiq_gripper_controller/gripper_cmd'
    before = sim.arm.state()[0]
    assert wait_for(lambda: np.max(np.abs(sim.arm.state()[0] - before)) > 1e-3, 10)
    assert node._state_machine.current_state[0] == State.PRIMARY_STATE_ACTIVE


@pytest.mark.skipif(importlib.util.find_spec('franka_msgs') is not None,
                    reason='franka_msgs is installed here')
def test_move_grasp_without_franka_msgs_fails_configure_saying_what_to_do(ros,
                                                                         gripper_package):
    node, _ = start(ros, gripper_package('fr3', 1.0), 'fr3', activate=False,
                    gripper_interface='franka_move_grasp')
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert 'franka_msgs' in node._fault and 'gripper_command' in node._fault
    assert node._gripper_channels == []


def test_gripper_thresholds_out_of_order_fail_configure_naming_them(ros, gripper_package):
    node, _ = start(ros, gripper_package('xarm6', 1.0), 'xarm6', activate=False,
                    gripper_open_threshold=0.8, gripper_close_threshold=0.6)
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert 'open_threshold' in node._fault and 'close_threshold' in node._fault
