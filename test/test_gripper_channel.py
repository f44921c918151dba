"""The gripper channel (vla_ros/ros/node/gripper_channel.py) against the sim robot's real
control_msgs/GripperCommand action servers (vla_ros/ros/sim_gripper.py), on a real rclpy
graph: goals on each driver's action name, pre-emption, and every failure reported."""

from __future__ import annotations

import importlib.util
import time

import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter
from ros_harness import wait_for
from sensor_msgs.msg import JointState

from vla_ros.adapters.gripper_filter import GripperFilter, GripperFilterConfig
from vla_ros.adapters.robots import robot_spec
from vla_ros.ros.node.gripper_channel import (
    ANSWER_TIMEOUT_S,
    GripperChannel,
    GripperInterfaceError,
)
from vla_ros.ros.sim_gripper import SimGripperServer
from vla_ros.ros.sim_nodes import SimRobotNode
from vla_ros.sim.gripper import SimGripper

pytestmark = pytest.mark.ros

ACTIONS = {'xarm6': '/xarm_gripper/gripper_action', 'fr3': '/franka_gripper/gripper_action',
           'ur5e': '/robotiq_gripper_controller/gripper_cmd'}


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, key: str, period_s: float, level: str, msg: str) -> None:
        self.lines.append((level, msg))


def setup(ros, robot: str, stroke_s: float = 0.2, namespace: str = ''):
    """The sim robot (own executor) and a channel on a client node: (channel, server, log)."""
    sim = SimRobotNode(robot, context=ros.context, namespace=namespace, parameter_overrides=[
        Parameter('gripper_stroke_s', value=stroke_s)])
    ros.add(sim, own_executor=True)
    client = Node('gripper_client', context=ros.context, namespace=namespace)
    ros.add(client)
    log = Log()
    channel = GripperChannel(client, robot_spec(robot).grippers[0], 'gripper_command', log)
    return channel, sim.gripper_servers['gripper'], log


def goals(robot: str, max_effort: float = 20.0):
    """The filter's close and open goals for the robot's gripper."""
    f = GripperFilter(robot_spec(robot).grippers[0],
                      GripperFilterConfig(min_dwell_s=0.0, max_effort=max_effort))
    return f.track(0.0, 1.0), f.track(1.0, 0.0)


@pytest.mark.parametrize('robot', sorted(ACTIONS))
def test_a_goal_reaches_the_drivers_action_with_its_position_and_effort(ros, robot):
    channel, server, _ = setup(ros, robot)
    assert channel.action_names == [ACTIONS[robot]]
    close, _ = goals(robot, max_effort=30.0)
    channel.submit(close)
    assert wait_for(lambda: channel.state == 'succeeded', 10), channel.state
    assert server.goals == [{'position': pytest.approx(close.position),
                             'max_effort': pytest.approx(30.0), 'outcome': 'succeeded'}]
    assert server.sim.position == pytest.approx(close.position)
    assert channel.failures == 0


@pytest.mark.parametrize('robot', sorted(ACTIONS))
def test_a_second_goal_cancels_the_first_before_it_is_sent(ros, robot):
    channel, server, _ = setup(ros, robot, stroke_s=5.0)
    close, open_ = goals(robot)
    channel.submit(close)
    assert wait_for(lambda: channel.state == 'active', 10)
    channel.submit(open_)
    assert wait_for(lambda: channel.state == 'succeeded', 10), channel.state
    assert [g['outcome'] for g in server.goals] == ['canceled', 'succeeded']
    assert server.goals[1]['position'] == pytest.approx(open_.position)
    assert channel.failures == 0 and channel.sent == 2


def test_the_gripper_joint_moves_in_joint_states_at_a_finite_speed(ros):
    states = ros.collect(JointState, '/joint_states')
    channel, server, _ = setup(ros, 'xarm6', stroke_s=0.5)
    close, _ = goals('xarm6')
    channel.submit(close)
    assert wait_for(lambda: channel.state == 'succeeded', 10)
    drive = [m.position[list(m.name).index('drive_joint')] for m in list(states)
             if 'drive_joint' in m.name]
    between = [p for p in drive if 0.05 < p < 0.8]
    assert len(between) >= 5, drive  # it passed through, not jumped
    assert drive[-1] == pytest.approx(0.85)


def test_a_goal_sent_while_the_server_is_unavailable_is_reported_and_sent_when_it_appears(
        ros):
    # Its own namespace: no server of an earlier test is still in this domain's graph.
    client = Node('gripper_client', context=ros.context, namespace='/late')
    ros.add(client)
    log = Log()
    gripper = robot_spec('xarm6').grippers[0]
    channel = GripperChannel(client, gripper, 'gripper_command', log)
    close, _ = goals('xarm6')
    channel.submit(close)
    assert wait_for(lambda: channel.state == 'server unavailable', 20)
    assert wait_for(lambda: len(log.lines) >= 2, 5)  # retried, and reported as one failure
    assert channel.failures == 1 and 'not available' in channel.last_error
    assert all(level == 'error' for level, _ in log.lines)
    host = Node('late_driver', context=ros.context, namespace='/late')
    server = SimGripperServer(host, SimGripper(gripper, 0.2), gripper.action_server)
    host.create_timer(0.01, lambda: (server.sim.step(0.01), server.step(0.01)))
    ros.add(host, own_executor=True)
    assert wait_for(lambda: channel.state == 'succeeded', 10), channel.state
    assert [g['outcome'] for g in server.goals] == ['succeeded']


def test_a_goal_the_server_does_not_answer_is_reported_and_sent_again(ros):
    class SlowServer(SimGripperServer):
        def _on_goal(self, request):
            if not self.goals and not getattr(self, 'slept', False):
                self.slept = True
                time.sleep(ANSWER_TIMEOUT_S + 1.0)  # a driver stuck on its first goal
            return super()._on_goal(request)

    host = Node('slow_driver', context=ros.context, namespace='/slow')
    gripper = robot_spec('xarm6').grippers[0]
    server = SlowServer(host, SimGripper(gripper, 0.2), gripper.action_server)
    host.create_timer(0.01, lambda: (server.sim.step(0.01), server.step(0.01)))
    ros.add(host, own_executor=True)
    client = Node('gripper_client', context=ros.context, namespace='/slow')
    ros.add(client)
    channel = GripperChannel(client, gripper, 'gripper_command', Log())
    close, _ = goals('xarm6')
    channel.submit(close)
    assert wait_for(lambda: channel.state == 'no answer', ANSWER_TIMEOUT_S + 2.0)
    assert wait_for(lambda: channel.state == 'succeeded', 10), channel.state
    assert channel.failures == 1 and channel.sent == 2
    assert server.goals[-1]['outcome'] == 'succeeded'


def test_a_rejected_goal_is_reported(ros):
    channel, server, log = setup(ros, 'ur5e')
    server.accepting = False
    close, _ = goals('ur5e')
    channel.submit(close)
    assert wait_for(lambda: channel.state == 'rejected', 10), channel.state
    assert channel.failures == 1 and 'rejected' in channel.last_error and channel.failing
    assert any('rejected' in msg for _, msg in log.lines)


def test_a_goal_aborted_by_the_server_is_reported(ros):
    channel, server, _ = setup(ros, 'xarm6', stroke_s=5.0)
    close, open_ = goals('xarm6')
    channel.submit(close)
    assert wait_for(lambda: channel.state == 'active', 10)
    other = GripperChannel(ros.io, robot_spec('xarm6').grippers[0], 'gripper_command', Log())
    other.submit(open_)  # another client pre-empts it at the server
    assert wait_for(lambda: channel.state == 'aborted', 10), channel.state
    assert channel.failures == 1 and 'status' in channel.last_error


def test_a_gripper_stopped_by_an_object_is_holding_it_not_failing(ros):
    channel, server, _ = setup(ros, 'fr3')
    server.sim.object_at = 0.02  # an object 4 cm wide between the fingers
    close, _ = goals('fr3')
    channel.submit(close)
    assert wait_for(lambda: channel.state == 'stalled', 10), channel.state
    assert channel.failures == 0 and not channel.failing
    assert server.sim.position == pytest.approx(0.02)


def test_a_namespaced_client_reaches_the_namespaced_server_only(ros):
    bare = Node('bare_driver', context=ros.context)
    gripper = robot_spec('xarm6').grippers[0]
    stray = SimGripperServer(bare, SimGripper(gripper), gripper.action_server)
    ros.add(bare, own_executor=True)
    channel, server, _ = setup(ros, 'xarm6', namespace='/robot1')
    assert channel.action_names == ['/robot1/xarm_gripper/gripper_action']
    close, _ = goals('xarm6')
    channel.submit(close)
    assert wait_for(lambda: channel.state == 'succeeded', 10), channel.state
    assert len(server.goals) == 1 and stray.goals == []


@pytest.mark.skipif(importlib.util.find_spec('franka_msgs') is not None,
                    reason='franka_msgs is installed here')
def test_move_grasp_without_franka_msgs_is_a_clear_error(ros):
    with pytest.raises(GripperInterfaceError, match='franka_msgs.*gripper_command'):
        GripperChannel(ros.io, robot_spec('fr3').grippers[0], 'franka_move_grasp', Log())


def test_move_grasp_for_a_gripper_without_those_actions_is_a_clear_error(ros):
    with pytest.raises(GripperInterfaceError, match='Franka Hand'):
        GripperChannel(ros.io, robot_spec('xarm6').grippers[0], 'franka_move_grasp', Log())
