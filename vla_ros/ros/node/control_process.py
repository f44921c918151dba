"""The control loop in its own process (parameter `control_process`): its own rclpy context
and node, its own joint-state and e-stop subscriptions, the SafetyFilter and the command
publisher. It shares no interpreter lock with the node's executor.

Why: as a thread of the node, the loop waits for the GIL while the executor deserializes
camera images (1 ms each, 60 a second) and joint states; its p99 period error was 2.2x that
of a bare loop beside it (README, performance). Here nothing else runs: one thread, no
executor. Each tick drains the pipe, takes the newest joint states and e-stops straight from
the subscriptions, steps the filter and publishes, on the schedule of ticks.py.

What crosses the pipe, and why a pipe: control_wire.py.
Safety: the filter holds while 'inputs' are older than max_staleness_ms (a hung node); at
the pipe's end (a dead node) or on 'stop' it disengages, brakes to rest, publishes the rest
and exits. The e-stop topic is read here too, so a stop never waits on the node's process.
Grippers behind a driver action stay with the node (their action clients need its
executor): it runs their filters on the reported state and targets.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

import numpy as np

from vla_ros.adapters.adapter import RobotAdapter
from vla_ros.adapters.gripper_filter import GripperFilter
from vla_ros.adapters.robots import robot_spec
from vla_ros.adapters.safety import SafetyFilter
from vla_ros.ros.node.control import (
    NO_JOINT_STATES,
    read_measured,
    stream_message,
    trajectory_due,
    trajectory_update,
)
from vla_ros.ros.node.control_wire import (
    ENGAGE_WAIT_S,
    MIN_FEED_TIMEOUT_S,
    PROCESS_NAME,
    REPORT_EVERY_TICKS,
    REST_TIMEOUT_S,
    ControlSpec,
    send_if_room,
)
from vla_ros.ros.node.gripper import filter_joint_grippers, gripper_target_fault
from vla_ros.ros.node.guard import CALLBACK_FAULT_HOLD_S
from vla_ros.ros.node.slots import InputSlots, camera_staleness
from vla_ros.ros.node.ticks import SWITCH_INTERVAL_S, wait_for_next_tick
from vla_ros.runtime.chunking.action_queue import plan_target, plan_view


def serve(conn, spec: ControlSpec) -> None:
    """The process's entry point: build, say 'ready' (or 'error'), tick until stopped."""
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    # A terminal's Ctrl-C, or a launch's SIGTERM, reaches the whole process group: the node
    # stops this process in order (the arm brought to rest first), so it does not act on
    # them; if the node dies instead, the pipe's end does the same here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError), open('/proc/self/comm', 'w') as f:
        f.write(PROCESS_NAME)
    context = Context()
    rclpy.init(args=[], context=context, signal_handler_options=SignalHandlerOptions.NO)
    try:
        loop = ControlProcess(conn, spec, context)
    except Exception as e:  # every start failure goes back to the node as its message
        conn.send(('error', f'{type(e).__name__}: {e}'))
        rclpy.shutdown(context=context)
        return
    conn.send(('ready', os.getpid()))
    try:
        loop.run()
    finally:
        loop.node.destroy_node()
        rclpy.shutdown(context=context)


def _take_all(sub) -> list:
    """Every (message, info) waiting on a subscription, without an executor."""
    out = []
    with sub.handle:
        while (taken := sub.handle.take_message(sub.msg_type, sub.raw)) is not None:
            out.append(taken)
    return out


class ControlProcess:
    """The loop and everything it owns: filter, plan, subscriptions, publisher."""

    def __init__(self, conn, spec: ControlSpec, context) -> None:
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Bool, Float64MultiArray
        from trajectory_msgs.msg import JointTrajectory

        self.conn, self.spec = conn, spec
        a = self.adapter = RobotAdapter(robot_spec(spec.robot), spec.state_names,
                                        spec.action_names, spec.controller or None)
        self.safety = SafetyFilter(a.lower, a.upper, a.velocity, a.acceleration, spec.safety,
                                   a.commanded)
        self.joint_grippers = [(GripperFilter(g, spec.gripper), a.joint_names.index(g.joint))
                               for _, g in a.action_grippers if g.joint in a.joint_names]
        self.mode = a.controller.mode
        self.node = Node(f'{spec.node_name}_control', namespace=spec.namespace or '/',
                         context=context, use_global_arguments=False,
                         start_parameter_services=False)
        cmd_type = {'position_stream': Float64MultiArray, 'joint_state': JointState,
                    'trajectory': JointTrajectory}[self.mode]
        self.pub = self.node.create_publisher(cmd_type, spec.topics['command'],
                                              QoSProfile(depth=1))
        sensor_qos = (QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
                      if spec.qos_reliable_sensors else qos_profile_sensor_data)
        self.joint_sub = self.node.create_subscription(
            JointState, spec.topics['joint_states'], _never_called, sensor_qos)
        self.estop_sub = self.node.create_subscription(Bool, spec.topics['estop'],
                                                       _never_called, QoSProfile(depth=10))
        self.slots = InputSlots([])  # joint states only; validated as the node does
        self.period = 1.0 / spec.control_rate_hz
        self.every = max(1, int(round(spec.control_rate_hz / spec.trajectory_rate_hz)))
        self.plan, self.plan_chunks, self.plan_stamp, self.seen_chunks = None, 0, None, 0
        self.inputs = {'cameras': {}, 'fault': '', 'robot_fault': '', 'external_scale': 1.0,
                       'max_staleness_ms': 200.0, 'hold_on_stale_inference': True}
        self.inputs_at = -np.inf  # none yet: hold
        self.last_measured = self.last_cmd = self.e2e_pending = None
        self.trajectory_counter = self.since_report = 0
        self.ticks, self.e2e_ms = [], []
        self.grippers: dict | None = None
        self.tick_fault, self.tick_fault_at = '', -np.inf
        self.stopping, self.stop_deadline, self.rest_ticks = '', 0.0, 0
        self.parent_gone = False
        self.engage_requests: list[tuple[int, float]] = []  # (request id, answer by)
        self._last_log: dict[str, float] = {}

    def now_s(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def log(self, key: str, period_s: float, msg: str) -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, -np.inf) >= period_s:
            self._last_log[key] = now
            self.node.get_logger().error(msg)

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        if self.spec.rt_priority > 0:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.spec.rt_priority))
            except OSError as e:
                self.node.get_logger().warn(f'control_rt_priority not applied ({e})')
        self.node.get_logger().info(f'control process {os.getpid()} ticking at '
                                    f'{self.spec.control_rate_hz:g} Hz')
        next_t = time.monotonic()
        while not self._done():
            # The tick's time is its wake-up, before any work, as the thread's and the bare
            # reference loop's are.
            t_mono = time.monotonic()
            self.ticks.append(t_mono)
            self._drain()
            self.guarded_tick(t_mono)
            next_t = wait_for_next_tick(next_t, self.period)
        self._report(force=True)

    def guarded_tick(self, t_mono: float) -> None:
        try:
            self._tick(t_mono)
        except Exception as e:  # as the node's guard: hold for a second, log, go on
            self.tick_fault = f'control tick failed: {type(e).__name__}: {e}'
            self.tick_fault_at = time.monotonic()
            self.log('tick', 2.0, f'{self.tick_fault}; holding')

    def _done(self) -> bool:
        """After a stop: once the filter is at rest and the rest has gone out (two ticks), or
        when REST_TIMEOUT_S is up."""
        if not self.stopping:
            return False
        at_rest = not np.any(self.safety.vel)
        self.rest_ticks = self.rest_ticks + 1 if at_rest else 0
        if self.rest_ticks > 2:
            return True
        if time.monotonic() > self.stop_deadline:
            self.log('rest', 0.0, f'{self.stopping}: still moving after {REST_TIMEOUT_S:g} s '
                     'of braking; exiting')
            return True
        return False

    def _stop(self, why: str) -> None:
        if not self.stopping:
            self.stopping, self.stop_deadline = why, time.monotonic() + REST_TIMEOUT_S
            self.safety.disengage()
            self.plan = None

    def _drain(self) -> None:
        if self.parent_gone:
            return
        try:
            while self.conn.poll():
                self._handle(self.conn.recv())
        except (EOFError, OSError):
            self._node_gone()
            return
        if os.getppid() != self.spec.parent_pid:  # reparented: the node has ended
            self._node_gone()

    def _node_gone(self) -> None:
        """The pipe's end, a failed send or a new parent: brake to rest and exit."""
        if self.parent_gone:
            return
        self.parent_gone = True
        self.node.get_logger().error('the node process ended: braking to rest, exiting')
        self._stop('the node process ended')
        self.stopping = 'the node process ended'  # whatever stop came before

    def _handle(self, msg: tuple) -> None:
        op = msg[0]
        if op == 'plan':
            _, self.plan, self.plan_chunks, self.plan_stamp = msg
            if self.stopping:
                self.plan = None
        elif op == 'inputs':
            self.inputs, self.inputs_at = msg[1], time.monotonic()
        elif op == 'engage':  # answered on a tick (_answer_engage)
            self.engage_requests.append((msg[1], time.monotonic() + ENGAGE_WAIT_S))
        elif op == 'disengage':
            self.safety.disengage()
        elif op == 'estop':
            self.safety.estop(msg[1])
            self.plan = None
        elif op == 'reset':
            self.safety.reset()
        elif op == 'safety_config':
            self.safety.config = msg[1]
        elif op == 'gripper_config':
            for f, _ in self.joint_grippers:
                f.config = msg[1]
        elif op == 'stop':
            self._stop('stop requested by the node')

    def _send(self, msg: tuple) -> bool:
        if self.parent_gone:
            return False
        try:
            return send_if_room(self.conn, msg)
        except OSError:
            self._node_gone()
            return False

    def _answer_engage(self) -> None:
        waiting = []
        for rid, answer_by in self.engage_requests:
            if self.slots.joints() is None and time.monotonic() < answer_by:
                waiting.append((rid, answer_by))
            else:
                self._send(('reply', rid, *self._engage()))
        self.engage_requests = waiting

    def _engage(self) -> tuple[bool, str]:
        if self.stopping:
            return False, f'cannot engage: the control process is stopping ({self.stopping})'
        joints = self.slots.joints()
        if joints is None:
            return False, 'cannot engage: no joint_states yet'
        age = self.now_s() - joints.received_s
        if age * 1000.0 > self.inputs['max_staleness_ms']:
            return False, f'cannot engage: joint_states are {age * 1000:.0f} ms old'
        try:
            measured = self.adapter.joint_positions(joints.names, joints.positions)
            self.safety.engage(measured)
        except KeyError as e:
            return False, f'cannot engage: {e}'
        except RuntimeError as e:  # the e-stop is latched
            return False, str(e)
        return True, 'engaged: moving from the current pose'

    # --- one tick ----------------------------------------------------------------------------

    def _take_inputs(self) -> None:
        for msg, _info in _take_all(self.estop_sub):
            if msg.data:
                self.safety.estop('e-stop topic')
                self.plan = None
                self.node.get_logger().warn('E-STOP latched: holding until ~/reset and '
                                            '~/engage')
        taken = _take_all(self.joint_sub)
        if taken:
            msg, info = taken[-1]
            now = self.now_s()
            received = info.get('received_timestamp') or 0
            received_s = received * 1e-9 if 0 < received * 1e-9 <= now else now
            if not self.slots.put_joints(msg, received_s):
                self.log('joints', 2.0, f'bad joint_states: {self.slots.errors.last}')

    def _measured(self) -> tuple[np.ndarray | None, str]:
        measured, why = read_measured(self.slots, self.adapter)
        if measured is not None:
            self.last_measured = measured
            return measured, ''
        if why != NO_JOINT_STATES:
            self.log('measured', 2.0, f'holding: {why}')
        return self.last_measured, why

    def _fault_now(self, now: float, target) -> str:
        mono = time.monotonic()
        if mono - self.tick_fault_at < CALLBACK_FAULT_HOLD_S:
            return self.tick_fault
        if self.stopping:
            return self.stopping
        inp = self.inputs
        max_age_s = inp['max_staleness_ms'] / 1000.0
        silent = mono - self.inputs_at
        if silent > max(max_age_s, MIN_FEED_TIMEOUT_S):
            return ('no inputs from the node yet' if self.inputs_at == -np.inf else
                    f'the node process is silent ({silent * 1000:.0f} ms)')
        stale = inp['fault'] or camera_staleness(self.spec.cameras, inp['cameras'], now,
                                                 max_age_s) or \
            self.slots.staleness(now, max_age_s) or inp['robot_fault']
        if stale:
            return stale
        if target is None:
            return 'no plan yet'
        if target.starved and inp['hold_on_stale_inference']:
            return 'inference stale (plan ran out)'
        return ''

    def _tick(self, t_mono: float) -> None:
        self._take_inputs()
        self._answer_engage()
        measured, input_fault = self._measured()
        if measured is None:
            self._report(force=False)
            return  # the arm was never seen: nothing was ever commanded, nothing to hold
        now = self.now_s()
        target = plan_target(self.plan, now)
        fault = input_fault or self._fault_now(now, target)
        if self.plan_chunks != self.seen_chunks:  # the first tick to use a new chunk
            self.seen_chunks, self.e2e_pending = self.plan_chunks, self.plan_stamp
        joint_target = grippers = None
        if target is not None and not fault:
            joint_target, grippers = self.adapter.joint_targets(target.position, measured)
            fault = gripper_target_fault(grippers)
            joint_target = None if fault else filter_joint_grippers(
                self.joint_grippers, joint_target, measured, t_mono)
        scale = self.inputs['external_scale']
        cmd = self.safety.step(joint_target, measured, self.period, fault, scale)
        previous, self.last_cmd = self.last_cmd, cmd
        self.grippers = None if grippers is None else {
            t.gripper.action_name: t.position for t in grippers}
        if cmd.state == 'holding':
            self.log('hold', 2.0, f'holding: {cmd.reason}')
        sent = True
        if self.mode != 'trajectory':
            self.pub.publish(stream_message(self.mode, self.adapter.joint_names, cmd,
                                            self.node.get_clock().now().to_msg()))
        else:
            sent, self.trajectory_counter = trajectory_due(self.trajectory_counter,
                                                           self.every, cmd, previous)
            if sent:
                view = plan_view(self.plan, now, step_s=0.1) if cmd.state == 'engaged' \
                    else None
                self.pub.publish(trajectory_update(view, self.adapter, self.safety, measured,
                                                   scale, contextlib.nullcontext()))
        if sent and self.e2e_pending is not None and cmd.state == 'engaged':
            self.e2e_ms.append((self.now_s() - self.e2e_pending) * 1000.0)
            self.e2e_pending = None
        self._report(force=previous is None or previous.state != cmd.state)

    def _report(self, force: bool) -> None:
        self.since_report += 1
        if not force and self.since_report < REPORT_EVERY_TICKS:
            return
        if self._send(('report', {'ticks': self.ticks, 'e2e_ms': self.e2e_ms,
                                  'cmd': self.last_cmd, 'grippers': self.grippers,
                                  'stopping': self.stopping})):
            self.ticks, self.e2e_ms, self.since_report = [], [], 0
        else:  # kept for the next report (bounded: a node that reads nothing is gone)
            del self.ticks[:-10000]
            del self.e2e_ms[:-1000]


def _never_called(_msg) -> None:
    """The subscriptions are read by take, never by an executor."""
