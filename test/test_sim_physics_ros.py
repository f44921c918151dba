"""The sim robot's physics tabletop over ROS, as the policy node meets it: the arm moved through
each robot's real controller topic, the gripper through its real interface (a
control_msgs/GripperCommand goal, or AgiBot's gripper joint in /joint_command), a grasp that
stalls on the block and lifts it; UR's speed scaling and program state."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from rclpy.action import ActionClient
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile
from ros_harness import RosHarness, wait_for
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from vla_ros.adapters.robots import robot_spec
from vla_ros.ros.sim_nodes import SimRobotNode
from vla_ros.sim.pick_scene import PickPlaceScene
from vla_ros.sim.scene import SCENE_OF, SCENE_ROBOTS

pytestmark = pytest.mark.ros
SEED = 21


@pytest.fixture
def ros():
    h = RosHarness()
    yield h
    h.close()


def _poses(robot: str, seed: int) -> dict[str, np.ndarray]:
    """Joint positions above, at and lifted from the episode's block (the layout the sim
    node draws for `seed`), from the scene's own IK."""
    s = PickPlaceScene(robot, (16, 16), 'pick')
    try:
        ep = s.reset(seed)
        c = ep.blocks[ep.target]
        return {'above': s.ik(c + [0, 0, 0.12]), 'grasp': s.ik(c + [0, 0, 0.002]),
                'lift': s.ik(c + [0, 0, 0.17])}
    finally:
        s.close()


def _sim(ros, robot: str) -> SimRobotNode:
    sim = SimRobotNode(robot, context=ros.context, parameter_overrides=[
        Parameter('scene', value='tabletop'), Parameter('task', value='pick'),
        Parameter('episode_seed', value=SEED), Parameter('image_width', value=16),
        Parameter('image_height', value=16), Parameter('camera_rate_hz', value=5.0),
        Parameter('gripper_stroke_s', value=0.3)])
    ros.add(sim, own_executor=True)
    return sim


def _trajectory(ros, robot: str, points: list[tuple[np.ndarray, float]]) -> None:
    spec = robot_spec(robot)
    topic = '/' + spec.controllers[spec.default_controller].topic
    pub = ros.io.create_publisher(JointTrajectory, topic, 10)
    assert wait_for(lambda: pub.get_subscription_count() > 0, 5)
    n = len(points[0][0])
    msg = JointTrajectory(joint_names=list(spec.joint_names[:n]))
    msg.points = [JointTrajectoryPoint(positions=q.tolist(),
                                       time_from_start=Duration(sec=int(t),
                                                                nanosec=int(t % 1 * 1e9)))
                  for q, t in points]
    pub.publish(msg)


def _status(statuses) -> dict:
    return json.loads(statuses[-1].data) if statuses else {}


@pytest.mark.parametrize('robot', ['xarm6', 'fr3', 'ur5e'])
def test_a_gripper_goal_closes_on_the_block_stalls_and_lifts_it(ros, robot):
    from control_msgs.action import GripperCommand

    sim = _sim(ros, robot)
    poses = _poses(robot, SEED)
    statuses = ros.collect(String, '/sim_robot/episode_status')
    _trajectory(ros, robot, [(poses['above'], 1.5), (poses['grasp'], 2.5)])
    assert wait_for(lambda: np.abs(sim.arm.state()[0][:len(poses['grasp'])]
                                   - poses['grasp']).max() < 1e-3, 15)
    g = robot_spec(robot).grippers[0]
    client = ActionClient(ros.io, GripperCommand, '/' + g.action_server)
    assert client.wait_for_server(timeout_sec=5)
    goal = GripperCommand.Goal()
    goal.command.position, goal.command.max_effort = g.joint_closed, 20.0
    sent = client.send_goal_async(goal)
    assert wait_for(sent.done, 5) and sent.result().accepted
    result = sent.result().get_result_async()
    assert wait_for(result.done, 10)
    r = result.result().result
    # Stopped by the block: stalled, short of the goal, about a 5 cm opening.
    assert r.stalled and not r.reached_goal
    assert 0.3 < g.closure(r.position) < 0.65
    assert wait_for(lambda: _status(statuses).get('held') == sim.scene.scene.episode.target, 5)
    _trajectory(ros, robot, [(poses['lift'], 1.5)])
    assert wait_for(lambda: _status(statuses).get('success'), 10), _status(statuses)
    st = _status(statuses)
    assert st['task'] == 'pick' and st['lifted'] and st['target_at'][2] > 0.07


def test_agibot_gripper_joint_in_joint_command_stalls_on_the_block(ros):
    sim = _sim(ros, 'agibot_g1')
    poses = _poses('agibot_g1', SEED)
    cfg = SCENE_ROBOTS[SCENE_OF['agibot_g1']]
    joint = robot_spec('agibot_g1').grippers[1].joint  # the right gripper
    pub = ros.io.create_publisher(JointState, '/joint_command', 10)
    assert wait_for(lambda: pub.get_subscription_count() > 0, 5)
    statuses = ros.collect(String, '/sim_robot/episode_status')
    states = ros.collect(JointState, '/joint_states')
    idx = [sim.arm.names.index(n) for n in cfg.spec_joints]

    def command(q, gripper: float) -> None:
        pub.publish(JointState(name=[*cfg.spec_joints, joint],
                               position=[*map(float, q), gripper]))

    for target in (poses['above'], poses['grasp']):
        command(target, 0.785)
        assert wait_for(lambda t=target: np.abs(sim.arm.state()[0][idx] - t).max() < 1e-3, 15)
    command(poses['grasp'], 0.0)  # closed
    assert wait_for(lambda: _status(statuses).get('held') == sim.scene.scene.episode.target, 5)
    # joint_states reports the gripper joint where the block stopped it (closed is 0)
    time.sleep(0.5)
    last = states[-1]
    stalled = last.position[list(last.name).index(joint)]
    assert 0.25 < stalled < 0.55
    command(poses['lift'], 0.0)
    assert wait_for(lambda: _status(statuses).get('success'), 10), _status(statuses)


def test_ur_speed_scaling_slows_the_trajectory_and_a_stopped_program_holds(ros):
    sim = SimRobotNode('ur5e', context=ros.context)
    ros.add(sim, own_executor=True)
    spec = robot_spec('ur5e')
    scaling = ros.collect(Float64, '/' + spec.speed_scaling_topic)
    program = ros.collect(Bool, '/' + spec.program_running_topic,
                          QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    assert wait_for(lambda: len(scaling) > 2 and program, 5)
    assert scaling[-1].data == 1.0 and program[-1].data is True
    start = sim.arm.state()[0].copy()
    goal = start + 0.4
    assert sim.set_parameters([Parameter('speed_scaling', value=0.5)])[0].successful
    assert wait_for(lambda: scaling[-1].data == 0.5, 5)
    _trajectory(ros, 'ur5e', [(goal, 2.0)])
    t0 = time.monotonic()
    # at half speed the 2 s trajectory is about half way after 2 s, and there after 4 s
    time.sleep(max(0.0, 2.0 - (time.monotonic() - t0)))
    halfway = np.abs(sim.arm.state()[0] - start).max()
    assert 0.05 < halfway < 0.35
    assert wait_for(lambda: np.abs(sim.arm.state()[0] - goal).max() < 1e-3, 10)
    # the program stops: the trajectory in flight stops, new commands are ignored
    assert sim.set_parameters([Parameter('program_running', value=False)])[0].successful
    assert wait_for(lambda: program[-1].data is False, 5)
    _trajectory(ros, 'ur5e', [(start, 1.0)])
    here = sim.arm.state()[0].copy()
    assert not wait_for(lambda: np.abs(sim.arm.state()[0] - here).max() > 1e-3, 1.5)
    assert not sim.set_parameters([Parameter('speed_scaling', value=-0.1)])[0].successful
