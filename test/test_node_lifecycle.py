"""The vla_policy node's transitions and reporting on a real rclpy graph with a sim robot:
engage only while active, every exit from active brings the arm to rest, engage on activate
waits for joint states, a signal to the process group ends in order, the instruction topic
and parameter stay one, UR speed scaling at 0 holds, the e-stop never waits behind a
parameter request. Faults of inputs and parameters are in test_node_faults.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rcl_interfaces.srv import SetParameters
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from ros_harness import Recorder, moving, wait_for
from std_msgs.msg import Bool
from test_node_faults import FR3, TOL
from test_ros_node import engage, start
from trajectory_msgs.msg import JointTrajectory

from vla_ros.ros.node.policy_node import VlaPolicyNode
from vla_ros.ros.sim_nodes import SimRobotNode

pytestmark = pytest.mark.ros

# --- lifecycle -------------------------------------------------------------------------------


def test_engage_is_refused_until_active_and_activate_never_moves_by_itself(ros,
                                                                         robot_packages):
    node, sim = start(ros, robot_packages['fr3'], *FR3, activate=False)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    res = engage(ros)
    assert not res.success and 'not active' in res.message
    before = sim.arm.state()[0]
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert wait_for(lambda: node.worker.stats.inferences >= 2, 20)
    assert np.allclose(sim.arm.state()[0], before, atol=1e-9)
    assert node._last_cmd.state == 'disengaged'


@pytest.mark.parametrize('robot,controller', [FR3, ('xarm6', '')], ids=['stream', 'trajectory'])
def test_deactivate_while_moving_brings_the_arm_to_rest_first(ros, robot_packages, robot,
                                                             controller):
    node, sim = start(ros, robot_packages[robot], robot, controller, control_process=False)
    rec = Recorder(node)
    assert engage(ros).success
    assert wait_for(lambda: moving(node), 20)
    rec.mark_fault()
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert np.max(np.abs(node.safety.vel)) == 0.0
    rec.report(f'deactivate while moving ({"stream" if controller else "trajectory"})', None)
    v_ratio, a_ratio = rec.limit_ratios()
    assert v_ratio <= 1 + TOL and a_ratio <= 1 + TOL, (v_ratio, a_ratio)
    last = rec.published[-1][2]
    if isinstance(last, JointTrajectory):
        assert np.allclose(last.points[-1].velocities, 0.0)
    # A trajectory controller finishes the braking trajectory it was sent last.
    assert wait_for(lambda: np.max(np.abs(sim.arm.velocity)) < 1e-6, 5)
    at = sim.arm.state()[0].copy()
    time.sleep(0.5)
    assert np.allclose(sim.arm.state()[0], at, atol=1e-3)  # it stays where it stopped
    assert not engage(ros).success  # inactive again: no engage


def test_engage_on_activate_waits_for_joint_states(ros, robot_packages):
    ros.start_cameras()
    node = VlaPolicyNode(context=ros.context, parameter_overrides=[
        Parameter('model_path', value=str(robot_packages['fr3'])),
        Parameter('robot', value='fr3'),
        Parameter('controller', value='forward_position_controller'),
        Parameter('instruction', value='pick up the red block'),
        Parameter('engage_on_activate', value=True),
        Parameter('max_staleness_ms', value=1000.0)])
    ros.add(node)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    time.sleep(0.5)  # activated before any robot exists: the first tries fail
    assert node._last_cmd is None or node._last_cmd.state == 'disengaged'
    ros.add(SimRobotNode('fr3', 'forward_position_controller', context=ros.context),
            own_executor=True)
    assert wait_for(lambda: node.safety.state == 'engaged', 10)


def test_a_stall_counts_every_missed_tick(ros, robot_packages):
    node, _ = start(ros, robot_packages['xarm6'], activate=False)
    period = 1.0 / node.p('control_rate_hz')
    for t in (0.0, period, period + 0.5):  # half a second without a tick
        node._count_tick(t)
    assert node._missed_ticks == round(0.5 / period) - 1


# --- signals ---------------------------------------------------------------------------------


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['ctrl-c', 'sigterm'])
def test_a_signal_to_the_process_group_shuts_down_cleanly(robot_packages, sig, tmp_path):
    exe = Path(sys.executable).parent / 'vla_policy'
    log = tmp_path / 'node.log'
    with open(log, 'w') as out:
        proc = subprocess.Popen(
            [str(exe), '--ros-args', '-p', f'model_path:={robot_packages["xarm6"]}',
             '-p', 'autostart:=true', '-p', 'instruction:=pick up the red block'],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            assert wait_for(lambda: 'activated' in log.read_text() or proc.poll() is not None,
                            60), log.read_text()
            assert proc.poll() is None, log.read_text()
            os.killpg(proc.pid, sig)  # as a terminal's Ctrl-C: the whole group
            assert proc.wait(timeout=30) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert 'Traceback' not in text, text
    assert 'shutting down' in text
    assert wait_for(lambda: not _group_alive(proc.pid), 10)  # the inference child too


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# --- reporting -------------------------------------------------------------------------------


def test_the_instruction_topic_and_parameter_stay_one(ros, robot_packages):
    from std_msgs.msg import String

    node, _ = start(ros, robot_packages['xarm6'])
    pub = ros.io.create_publisher(String, '/vla_policy/instruction', 10)
    assert wait_for(lambda: pub.get_subscription_count() > 0, 5)
    pub.publish(String(data='tap the blue cube'))
    assert wait_for(lambda: node.p('instruction') == 'tap the blue cube', 5)
    assert node.slots.instruction == 'tap the blue cube'


def test_an_instruction_latched_before_the_node_started_is_received(ros, robot_packages):
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from std_msgs.msg import String

    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pub = ros.io.create_publisher(String, '/vla_policy/instruction', latched)
    pub.publish(String(data='tap the blue cube'))  # nobody listens yet
    node, _ = start(ros, robot_packages['xarm6'], instruction='')
    assert wait_for(lambda: node.p('instruction') == 'tap the blue cube', 10)


def test_a_namespace_moves_every_topic_of_the_node_and_its_sim(ros, robot_packages):
    stray = ros.collect(JointTrajectory, '/xarm6_traj_controller/joint_trajectory')
    sim = SimRobotNode('xarm6', '', context=ros.context, namespace='robot1')
    ros.add(sim, own_executor=True)
    ros.start_cameras(namespace='/robot1')
    # Another robot in the root namespace: its joint states must not reach this node.
    other_sim = SimRobotNode('xarm6', '', context=ros.context, initial=[0.5] * 6)
    ros.add(other_sim, own_executor=True)
    node = VlaPolicyNode(context=ros.context, namespace='robot1', parameter_overrides=[
        Parameter('model_path', value=str(robot_packages['xarm6'])),
        Parameter('instruction', value='tap the red cube'),
        Parameter('max_staleness_ms', value=1000.0), Parameter('speed_scale', value=1.0)])
    ros.add(node)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node._pubs['command'].topic_name == '/robot1/xarm6_traj_controller/joint_trajectory'
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert wait_for(lambda: node.slots.joints() is not None, 10)
    seen = dict(zip(node.slots.joints().names, node.slots.joints().positions, strict=True))
    assert np.allclose([seen[n] for n in sim.arm.names], sim.arm.state()[0], atol=1e-6)
    from std_srvs.srv import SetBool

    assert ros.call(SetBool, '/robot1/vla_policy/engage', SetBool.Request(data=True)).success
    before = sim.arm.state()[0].copy()
    assert wait_for(lambda: np.max(np.abs(sim.arm.state()[0] - before)) > 1e-3, 20)
    assert stray == [] and np.allclose(other_sim.arm.state()[0], 0.5)


def test_speed_scaling_at_zero_is_a_hold_with_the_reason(ros, robot_packages):
    from rclpy.parameter import Parameter as RclpyParameter
    from std_msgs.msg import Float64

    node, sim = start(ros, robot_packages['ur5e'], 'ur5e')
    assert engage(ros).success
    assert wait_for(lambda: node._last_cmd is not None and node._last_cmd.state == 'engaged',
                    20)
    # the simulated robot publishes its speed scaling as the driver does; the pendant's
    # slider (its parameter) goes to zero
    seen = ros.collect(Float64, node.adapter.robot.speed_scaling_topic)
    assert wait_for(lambda: len(seen) > 3 and seen[-1].data == 1.0, 5)
    assert sim.set_parameters([RclpyParameter('speed_scaling', value=0.0)])[0].successful
    assert wait_for(lambda: node._last_cmd.state == 'holding', 5)
    assert 'speed scaling' in node._last_cmd.reason
    assert not sim.set_parameters([RclpyParameter('speed_scaling', value=1.5)])[0].successful


def test_an_estop_latches_while_a_parameter_request_is_still_being_answered(ros,
                                                                          robot_packages):
    import threading

    node, _ = start(ros, robot_packages['fr3'], *FR3)
    assert engage(ros).success
    release = threading.Event()
    check = node._check_swap

    def slow_check(path):  # a request that takes long to answer (a huge manifest, a slow disk)
        release.wait(10)
        return check(path)

    node._check_swap = slow_check
    cli = ros.io.create_client(SetParameters, '/vla_policy/set_parameters')
    assert cli.wait_for_service(timeout_sec=5)
    req = SetParameters.Request(parameters=[
        Parameter('model_path', value=str(robot_packages['xarm6'])).to_parameter_msg()])
    fut = cli.call_async(req)
    time.sleep(0.3)  # the request is inside the node's callback now
    ros.io.create_publisher(Bool, '/vla_policy/estop', 10).publish(Bool(data=True))
    assert wait_for(lambda: node.safety.state == 'estop', 5)
    assert not fut.done()  # latched while the request was still being answered
    release.set()
    assert wait_for(fut.done, 10)


def test_an_entity_gone_under_the_executor_is_logged_and_the_node_spins_on(monkeypatch):
    """spin_until (main's loop): InvalidHandle from one spin (an entity a transition destroyed
    while another executor thread waited on it) is logged and spinning goes on."""
    import threading

    from rclpy.exceptions import InvalidHandle

    from vla_ros.ros.node.policy_node import spin_until

    stop = threading.Event()
    calls, warnings = [], []

    class Executor:
        def spin_once(self, timeout_sec):
            calls.append(timeout_sec)
            if len(calls) == 1:
                raise InvalidHandle('subscription destroyed')
            if len(calls) == 3:
                stop.set()

    class Logger:
        def warn(self, msg):
            warnings.append(msg)

    class Node:
        def get_logger(self):
            return Logger()

    import rclpy

    monkeypatch.setattr(rclpy, 'ok', lambda *a, **k: True)  # the loop needs no context
    spin_until(stop, Executor(), Node())
    assert len(calls) == 3
    assert len(warnings) == 1 and 'subscription destroyed' in warnings[0]
