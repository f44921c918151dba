"""The control loop in its own process (`control_process:=true`) driving the sim robot over
real topics: commands come from the process's own node, it holds on stale inputs and on the
e-stop, deactivate ends it, a killed control process is an error on ~/status with nothing
more commanded from its plan, and a node process that dies or stops feeding it leaves the
arm held (and the control process gone, once the node is)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from lifecycle_msgs.msg import State
from rclpy.lifecycle import TransitionCallbackReturn
from ros_harness import wait_for
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger
from test_ros_node import engage, start
from trajectory_msgs.msg import JointTrajectory

from vla_ros.ros.node.control_wire import PROCESS_NAME
from vla_ros.ros.sim_nodes import SimRobotNode

pytestmark = pytest.mark.ros

FR3 = ('fr3', 'forward_position_controller')
FR3_TOPIC = '/forward_position_controller/commands'
XARM_TOPIC = '/xarm6_traj_controller/joint_trajectory'


def start_process_mode(ros, robot_packages, robot='fr3', controller=FR3[1], **params):
    return start(ros, robot_packages[robot], robot, controller, control_process=True, **params)


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def control_children(parent: int) -> list[int]:
    """The control processes started by `parent` (their /proc comm is PROCESS_NAME)."""
    out = []
    for pid in (int(p) for p in os.listdir('/proc') if p.isdigit()):
        try:
            with open(f'/proc/{pid}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
            with open(f'/proc/{pid}/comm') as f:
                comm = f.read().strip()
        except OSError:
            continue
        if int(fields[1]) == parent and comm == PROCESS_NAME:
            out.append(pid)
    return out


def moving(node) -> bool:
    cmd = node._last_cmd
    return cmd is not None and cmd.state == 'engaged' and float(np.max(np.abs(
        cmd.velocities))) > 1e-3


def _braked_to_rest_then_silent(got, sim, settle_s: float, quiet_s: float) -> None:
    """After settle_s no command comes for quiet_s, the arm stands still, and the last
    commands sent were one pose: the arm was brought to rest, not left on a plan."""
    time.sleep(settle_s)
    n = len(got)
    rest = sim.arm.state()[0]
    time.sleep(quiet_s)
    assert len(got) == n
    assert np.allclose(sim.arm.state()[0], rest, atol=1e-6)
    last = np.array([m.data for m in got[-3:]])
    assert np.allclose(last, last[-1], atol=1e-9)


@pytest.mark.parametrize('robot,controller,topic,msg_type', [
    ('fr3', FR3[1], FR3_TOPIC, Float64MultiArray), ('xarm6', '', XARM_TOPIC, JointTrajectory)],
    ids=['stream', 'trajectory'])
def test_the_control_process_commands_the_sim_robot_from_its_own_node(
        ros, robot_packages, robot, controller, topic, msg_type):
    got = ros.collect(msg_type, topic)
    node, sim = start_process_mode(ros, robot_packages, robot, controller)
    pid = node._link.pid
    assert pid != os.getpid() and alive(pid)
    assert control_children(os.getpid()) == [pid]
    assert engage(ros).success
    before = sim.arm.state()[0]
    assert wait_for(lambda: np.max(np.abs(sim.arm.state()[0] - before)) > 1e-3, 20)
    assert wait_for(lambda: len(got) >= 3, 10)
    publishers = {i.node_name for i in ros.io.get_publishers_info_by_topic(topic)}
    assert 'vla_policy_control' in publishers
    assert wait_for(lambda: moving(node), 10)
    assert node._missed_ticks < len(node._ticks)  # the node counts the process's ticks


def test_a_stale_camera_holds_and_tracking_resumes(ros, robot_packages):
    node, _ = start_process_mode(ros, robot_packages)
    assert engage(ros).success
    assert wait_for(lambda: moving(node), 20)
    ros.camera_on.clear()
    # (The plan runs out first: inference stops with the cameras.)
    assert wait_for(lambda: 'camera' in node._last_cmd.reason, 5), node._last_cmd
    assert node._last_cmd.state == 'holding'
    assert wait_for(lambda: not np.any(node._last_cmd.velocities), 5)
    ros.camera_on.set()
    assert wait_for(lambda: moving(node), 20)


def test_the_estop_latches_in_the_control_process_until_reset(ros, robot_packages):
    got = ros.collect(Float64MultiArray, FR3_TOPIC)
    node, _ = start_process_mode(ros, robot_packages)
    assert engage(ros).success
    assert wait_for(lambda: moving(node), 20)
    pub = ros.io.create_publisher(Bool, '/vla_policy/estop', 10)
    pub.publish(Bool(data=True))
    assert wait_for(lambda: node._last_cmd.state == 'estop', 5)
    assert wait_for(lambda: not np.any(node._last_cmd.velocities), 5)
    n = len(got)
    assert wait_for(lambda: len(got) > n + 20, 5)
    held = np.array([m.data for m in got[-10:]])
    assert np.allclose(held, held[0], atol=0.0)  # at rest, every command the same
    assert not engage(ros).success
    assert ros.call(Trigger, '/vla_policy/reset', Trigger.Request()).success
    assert engage(ros).success
    assert wait_for(lambda: moving(node), 20)


def test_deactivate_stops_the_control_process_and_activate_starts_a_new_one(
        ros, robot_packages):
    got = ros.collect(Float64MultiArray, FR3_TOPIC)
    node, _ = start_process_mode(ros, robot_packages)
    assert engage(ros).success
    assert wait_for(lambda: moving(node), 20)
    link = node._link
    pid = link.pid
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert not alive(pid) and node._link is None
    assert link._proc.exitcode == 0  # it stopped by itself, at rest
    assert not np.any(node._last_cmd.velocities)
    time.sleep(0.3)  # nothing in flight is left to arrive
    n = len(got)
    time.sleep(0.5)
    assert len(got) == n  # nothing commands the arm while inactive
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert node._link.pid != pid and alive(node._link.pid)
    assert engage(ros).success
    assert wait_for(lambda: moving(node), 20)
    second = node._link.pid
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert not alive(second) and control_children(os.getpid()) == []


def test_shutdown_from_active_brings_the_arm_to_rest_and_ends_the_control_process(
        ros, robot_packages):
    node, _ = start_process_mode(ros, robot_packages)
    assert engage(ros).success
    assert wait_for(lambda: moving(node), 20)
    link = node._link
    assert node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
    assert not alive(link.pid) and link._proc.exitcode == 0
    assert control_children(os.getpid()) == []


def test_a_killed_control_process_is_an_error_and_nothing_more_comes_from_its_plan(
        ros, robot_packages):
    got = ros.collect(Float64MultiArray, FR3_TOPIC)
    statuses = ros.collect(DiagnosticStatus, '/vla_policy/status')
    node, sim = start_process_mode(ros, robot_packages)
    assert engage(ros).success
    assert wait_for(lambda: moving(node), 20)
    os.kill(node._link.pid, signal.SIGKILL)
    assert wait_for(lambda: node._control_ended != '', 5)
    assert 'exit code -9' in node._control_ended
    assert wait_for(lambda: any(s.level == DiagnosticStatus.ERROR and 'control process ended'
                                in s.message for s in list(statuses)), 5)
    values = {kv.key: kv.value for kv in statuses[-1].values}
    assert 'control process ended' in values['control_loop']
    # The node brakes the arm from the last reported command; then nothing more comes.
    _braked_to_rest_then_silent(got, sim, settle_s=2.0, quiet_s=1.0)
    ok = engage(ros)
    assert not ok.success and 'control process' in ok.message
    assert node._state_machine.current_state[0] == State.PRIMARY_STATE_ACTIVE
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS  # no hang, no raise


def test_a_joint_missing_from_the_control_process_joint_states_holds(ros, robot_packages):
    from test_node_faults import relay_joint_states

    drop: set[str] = set()
    relay_joint_states(ros, drop)
    node, sim = start_process_mode(ros, robot_packages, joint_states_topic='/relay/joint_states')
    assert engage(ros).success
    assert wait_for(lambda: moving(node), 20)
    drop.add(sim.arm.names[3])
    assert wait_for(lambda: node._last_cmd.state == 'holding', 5)
    assert 'joint_states incomplete' in node._last_cmd.reason and sim.arm.names[3] in \
        node._last_cmd.reason
    assert wait_for(lambda: not np.any(node._last_cmd.velocities), 5)
    drop.clear()
    assert wait_for(lambda: moving(node), 20)


def test_a_lowered_speed_scale_reaches_the_control_process(ros, robot_packages):
    node, sim = start_process_mode(ros, robot_packages)
    assert engage(ros).success
    assert wait_for(lambda: moving(node), 20)
    assert ros.set_params('vla_policy', speed_scale=0.05)[0].successful
    time.sleep(1.0)  # reached at the acceleration limit
    vmax = node.adapter.velocity * 0.05
    for _ in range(50):
        assert np.all(np.abs(node._last_cmd.velocities) <= vmax + 1e-9)
        time.sleep(0.02)


def test_a_killed_inference_process_holds_the_control_process_until_it_serves_again(
        ros, robot_packages):
    node, _ = start_process_mode(ros, robot_packages)
    node.worker.restart_backoff_s = 1.5
    assert engage(ros).success
    assert wait_for(lambda: moving(node), 20)
    served = node.worker.stats.inferences
    os.kill(node.policy._proc.pid, signal.SIGKILL)
    assert wait_for(lambda: node._last_cmd.state == 'holding', 10)
    assert 'inference process' in node._last_cmd.reason
    assert wait_for(lambda: node.worker.stats.restarts == 1, 60)
    assert wait_for(lambda: node.worker.stats.inferences > served + 1 and moving(node), 30)


def test_a_failing_tick_of_the_control_process_holds_for_a_second_and_it_goes_on(
        ros, robot_packages):
    """The process's loop without a process: its tick in this one, fed by hand."""
    import multiprocessing

    from vla_ros.adapters.gripper_filter import GripperFilterConfig
    from vla_ros.adapters.safety import SafetyConfig
    from vla_ros.ros.node.control_process import ControlProcess
    from vla_ros.ros.node.control_wire import ControlSpec
    from vla_ros.runtime.chunking.trajectory import Trajectory

    sim = SimRobotNode(*FR3, context=ros.context)
    ros.add(sim, own_executor=True)
    names = tuple(sim.arm.names)
    ours, theirs = multiprocessing.Pipe()
    spec = ControlSpec('unit', '/', 'fr3', FR3[1], names, names,
                       {'command': FR3_TOPIC, 'joint_states': '/joint_states',
                        'estop': '/unit/estop'}, (), 100.0, 10.0, SafetyConfig(),
                       GripperFilterConfig(), False, 0, os.getppid())
    loop = ControlProcess(theirs, spec, ros.context)
    try:
        def tick() -> None:
            loop.inputs_at = time.monotonic()  # a node that feeds it
            loop._drain()
            loop.guarded_tick(time.monotonic())

        loop.inputs.update(max_staleness_ms=1000.0)
        assert wait_for(lambda: (tick(), loop.slots.joints() is not None)[1], 10)
        now = loop.now_s()
        pose = sim.arm.state()[0]
        loop.plan = Trajectory(now + np.arange(50) * 0.1, pose + np.linspace(0, 0.3, 50)[:, None])
        assert loop._engage()[0]
        for _ in range(20):
            tick()
        assert loop.last_cmd.state == 'engaged'
        original = loop.adapter.joint_targets
        loop.adapter.joint_targets = lambda *_: 1 / 0
        tick()
        loop.adapter.joint_targets = original
        tick()
        assert loop.last_cmd.state == 'holding' and 'ZeroDivisionError' in loop.last_cmd.reason
        time.sleep(1.0)
        tick()
        assert loop.last_cmd.state == 'engaged'  # it went on, and tracks again
    finally:
        loop.node.destroy_node()
        ours.close()


# --- the node's process dies or stops --------------------------------------------------------


@pytest.fixture
def node_process(ros, robot_packages):
    """The vla_policy node in its own process (`ros2 run`'s entry point), autostarted and
    engaged with the control loop in a process of its own, beside the sim robot and the
    cameras in this one; killed and reaped afterwards, with its children."""
    sim = SimRobotNode(*FR3, context=ros.context)
    ros.add(sim, own_executor=True)
    ros.start_cameras()
    args = {'model_path': str(robot_packages['fr3']), 'robot': 'fr3', 'controller': FR3[1],
            'instruction': 'pick up the red block', 'max_staleness_ms': 1000.0,
            'speed_scale': 1.0, 'control_process': True, 'autostart': True,
            'engage_on_activate': True}
    cmd = [sys.executable, '-m', 'vla_ros.ros.node.policy_node', '--ros-args']
    for k, v in args.items():
        cmd += ['-p', f'{k}:={str(v).lower() if isinstance(v, bool) else v}']
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen(cmd, env=env)
    children: list[int] = []
    try:
        assert wait_for(lambda: bool(control_children(proc.pid)), 60), 'no control process'
        children = control_children(proc.pid)
        yield proc, children[0], sim
    finally:
        for pid in [proc.pid, *children]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)


def test_a_dead_node_process_leaves_the_arm_at_rest_and_the_control_process_exits(
        ros, node_process):
    proc, child, sim = node_process
    got = ros.collect(Float64MultiArray, FR3_TOPIC)
    start_pose = sim.arm.state()[0]
    assert wait_for(lambda: np.max(np.abs(sim.arm.state()[0] - start_pose)) > 1e-3, 60)
    proc.kill()
    proc.wait(10)
    assert wait_for(lambda: not alive(child), 10), 'the control process outlived the node'
    _braked_to_rest_then_silent(got, sim, settle_s=0.3, quiet_s=0.5)  # before it exited


def test_a_stopped_node_process_makes_the_control_process_hold(ros, node_process):
    proc, child, sim = node_process
    got = ros.collect(Float64MultiArray, FR3_TOPIC)
    start_pose = sim.arm.state()[0]
    assert wait_for(lambda: np.max(np.abs(sim.arm.state()[0] - start_pose)) > 1e-3, 60)
    os.kill(proc.pid, signal.SIGSTOP)  # alive but silent: no inputs, no plan
    try:
        time.sleep(3.0)  # max_staleness_ms 1 s, then braking
        assert alive(child)
        n = len(got)
        assert wait_for(lambda: len(got) > n + 20, 5)  # it still commands: the hold
        held = np.array([m.data for m in got[-10:]])
        assert np.allclose(held, held[0], atol=1e-9)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    moved = sim.arm.state()[0]
    assert wait_for(lambda: np.max(np.abs(sim.arm.state()[0] - moved)) > 1e-3, 30)
