"""The vla_policy node's side of the control loop, whichever runs it: the control thread
(control.py) or the control process (`control_process` true: control_process.py, reached
through control_link.py).

Every request to the filter (engage, disengage, e-stop, reset, a new speed or acceleration
scale) goes through here. In thread mode it is applied to the node's SafetyFilter under
`_safety_lock`. In process mode the node's SafetyFilter is a mirror that each report of the
process overwrites (state, command and velocity: what ~/status, the rest wait and the
braking after a dead process read), and the request goes to the process as well; the plan
is sent after every merge and every clear. The link thread (control_link.py) delivers the
reports here: tick times, e2e latencies and gripper targets, so the node's bookkeeping and
the grippers behind driver actions (their action clients need this node's executor) run as
in thread mode. A control process that ends unasked is an error on ~/status; the node brakes
the arm from the last reported command (a braking trajectory, or braking setpoints at the
control rate) and engages no more until it is deactivated and activated again.
Mixed into VlaPolicyNode (policy_node.py).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from vla_ros.adapters.adapter import GripperTarget
from vla_ros.adapters.safety import Command
from vla_ros.ros.node.control import braking_trajectory, stream_message, trajectory_message
from vla_ros.ros.node.control_link import ControlLink
from vla_ros.ros.node.control_wire import ControlSpec
from vla_ros.ros.node.guard import CALLBACK_FAULT_HOLD_S, guarded

JOINTS_WAIT_S = 10.0
REST_REPEATS = 3


class RemoteControlMixin:
    """Requests to the filter in either mode; the control process's start, feed and end."""

    def _start_control(self) -> None:
        """on_activate: the control thread, or the control process (ControlProcessError if
        it cannot start)."""
        self._control_stop.clear()
        if not self.p('control_process'):
            self._control_thread = threading.Thread(target=self._control_loop,
                                                    name='vla_control', daemon=False)
            self._control_thread.start()
            return
        self._control_ended, self._control_measured = '', False
        self._link = ControlLink(self._control_spec(), self._control_inputs,
                                 self._on_control_report, self._on_control_ended)
        self._send_plan()
        # Its subscription is matched a second or so after its start: while the joint states
        # arrive here (or may still, the first second), activation waits, bounded, until they
        # do there, so that an engage right after it starts from them, as in thread mode.
        t0 = time.monotonic()
        while not self._control_measured and self._link.alive and \
                time.monotonic() - t0 < JOINTS_WAIT_S and \
                (self.slots.joints() is not None or time.monotonic() - t0 < 1.0):
            time.sleep(0.02)
        self.get_logger().info(f'control loop in its own process (pid {self._link.pid})')
        if not self._control_measured and self.slots.joints() is not None:
            self.get_logger().warn(f'the control process has no joint_states after '
                                   f'{JOINTS_WAIT_S:g} s (its subscription is not matched '
                                   'yet); it holds, and an engage waits for them')

    def _control_spec(self) -> ControlSpec:
        m = self.manifest
        return ControlSpec(
            node_name=self.get_name(), namespace=self.get_namespace(), robot=self.p('robot'),
            controller=self.p('controller'), state_names=tuple(m.state.names),
            action_names=tuple(m.action.names),
            topics={'command': self._pubs['command'].topic_name,
                    'estop': self.resolve_topic_name('~/estop'),
                    'joint_states': self.resolve_topic_name(self.p('joint_states_topic'))},
            cameras=tuple(self.p('camera_names')), control_rate_hz=self.p('control_rate_hz'),
            trajectory_rate_hz=self.p('trajectory_rate_hz'), safety=self.safety.config,
            gripper=self._gripper_config(), qos_reliable_sensors=self.p('qos_reliable_sensors'),
            rt_priority=self.p('control_rt_priority'), parent_pid=os.getpid())

    def _stop_control(self) -> None:
        """Stops the control thread or process (it brakes to rest first); no orphan."""
        self._control_stop.set()
        if self._control_thread is not None:
            self._control_thread.join(timeout=5.0)
            if self._control_thread.is_alive():
                self.get_logger().error('control thread did not stop within 5 s')
            self._control_thread = None
        link, self._link = self._link, None
        if link is not None and not link.stop():
            self.get_logger().error('the control process did not exit when asked; ended it')

    def _control_alive(self) -> bool:
        if self._link is not None:
            return self._link.alive
        return self._control_thread is not None and self._control_thread.is_alive()

    # --- requests to the filter --------------------------------------------------------------

    def _to_filter(self, op: str, *args) -> None:
        """disengage, estop (reason), reset: to the filter, or its mirror and the process."""
        with self._safety_lock:
            getattr(self.safety, op)(*args)
        link = self._link  # (read once: a transition may end it meanwhile)
        if link is not None:
            link.send(op, *args)

    def _set_filter_config(self, config) -> None:
        with self._safety_lock:
            self.safety.config = config
        link = self._link
        if link is not None:
            link.send('safety_config', config)

    def _engage_filter(self, measured: np.ndarray) -> tuple[bool, str]:
        if self._control_ended:
            return False, (f'cannot engage: {self._control_ended}; deactivate and activate '
                           'to start a new control process')
        link = self._link
        if link is not None:
            return link.request('engage')
        with self._safety_lock:
            try:
                self.safety.engage(measured)
            except RuntimeError as e:
                return False, str(e)
        return True, 'engaged: moving from the current pose'

    def _send_plan(self) -> None:
        """Process mode: the queue's plan as it is now (after a merge or a clear). Read and
        sent under one lock, so the last message is always the queue's latest state."""
        link, queue = self._link, self.queue
        if link is None or queue is None:
            return
        with self._plan_lock:
            chunk = queue.last_chunk
            link.send('plan', queue.plan(), queue.chunks_merged,
                      chunk.stamp_s if chunk is not None else None)

    # --- the link thread ---------------------------------------------------------------------

    @guarded('control inputs')
    def _control_inputs(self) -> dict | None:
        """What the process's tick needs from this process, every FEED_PERIOD_S (None after
        a failure: nothing is sent, and the process holds once the inputs are stale)."""
        callback = (self._callback_fault if time.monotonic() - self._callback_fault_at <
                    CALLBACK_FAULT_HOLD_S else '')
        return {'cameras': {c: f.received_s for c, f in self.slots.frames().items()},
                'fault': callback, 'robot_fault': self._robot_fault(),
                'external_scale': self._external_scale,
                'max_staleness_ms': self.p('max_staleness_ms'),
                'hold_on_stale_inference': self.p('hold_on_stale_inference')}

    @guarded('control report')
    def _on_control_report(self, report: dict) -> None:
        for t in report['ticks']:
            self._count_tick(t)
        if report['e2e_ms']:
            self.e2e_ms.extend(report['e2e_ms'])
            del self.e2e_ms[:-1000]
        cmd: Command | None = report['cmd']
        if cmd is None:
            return
        with self._safety_lock:  # the mirror
            s = self.safety
            s.state, s.reason, s.cmd, s.vel = cmd.state, cmd.reason, cmd.positions, \
                cmd.velocities
        self._last_cmd, self._control_measured = cmd, True
        self._last_report_at = report['ticks'][-1] if report['ticks'] else time.monotonic()
        grippers = report['grippers']
        targets = None if grippers is None else [
            GripperTarget(g, grippers[g.action_name]) for _, g in self.adapter.action_grippers
            if g.action_name in grippers]
        self._tick_grippers(cmd.state, cmd.reason, targets, time.monotonic())

    @guarded('control process ended')
    def _on_control_ended(self, reason: str) -> None:
        self._control_ended = reason
        self.get_logger().error(f'{reason}: braking the arm from its last command; no motion '
                                'until the node is deactivated and activated again')
        with self._safety_lock:
            s = self.safety
            if s.cmd is None:
                return  # nothing was ever commanded
            age = max(0.0, time.monotonic() - self._last_report_at)
            s.cmd = np.clip(s.cmd + s.vel * age, s.lower, s.upper)
            s.state, s.reason = 'holding', reason
            dt = 1.0 / self.p('control_rate_hz')
            times, pos, vel = braking_trajectory(s, sample_s=dt)
        self._last_cmd = Command(pos[-1], np.zeros_like(vel[-1]), 'holding', reason)
        self._tick_grippers('holding', reason, None, time.monotonic())
        publish, mode = self._pubs['command'].publish, self.adapter.controller.mode
        if mode == 'trajectory':
            publish(trajectory_message(self.adapter.joint_names, times, pos, vel))
            return
        start = time.monotonic()
        # The rest is sent REST_REPEATS times: a streaming controller keeps the last setpoint
        # it got, and that must be the rest, whatever one message's fate.
        times = np.concatenate([times, times[-1] + dt * np.arange(1, REST_REPEATS)])
        pos = np.concatenate([pos, np.repeat(pos[-1:], REST_REPEATS - 1, axis=0)])
        vel = np.concatenate([vel, np.zeros((REST_REPEATS - 1, vel.shape[1]))])
        for t, q, v in zip(times, pos, vel, strict=True):
            time.sleep(max(0.0, start + t - time.monotonic()))
            cmd = Command(q, v, 'holding', reason)
            publish(stream_message(mode, self.adapter.joint_names, cmd,
                                   self.get_clock().now().to_msg()))

    def _control_process_state(self) -> str:
        if not self.p('control_process'):
            return 'thread'
        if self._control_ended:
            return self._control_ended
        return f'running (pid {self._link.pid})' if self._link is not None else 'stopped'
