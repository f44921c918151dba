"""The vla_policy node's control path: the control thread, its tick, and trajectory updates.

Threads: `_control_loop` is its own thread (not an executor timer; see policy_node.py) that
owns the SafetyFilter through `_safety_lock` and publishes streamed commands; `_on_trajectory`
is an executor timer for trajectory controllers. Every command leaves through the filter.
Mixed into VlaPolicyNode (policy_node.py).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from vla_ros.ros.node.guard import CALLBACK_FAULT_HOLD_S, duration_msg, guarded

CONTROL_SWITCH_INTERVAL_S = 0.0005


class ControlMixin:
    """The control thread and the trajectory timer: every command through the filter."""

    def _fault_now(self, now: float, target) -> str:
        if time.monotonic() - self._callback_fault_at < CALLBACK_FAULT_HOLD_S:
            return self._callback_fault
        stale = self.slots.staleness(now, self.p('max_staleness_ms') / 1000.0)
        if stale:
            return stale
        if not self._program_running:
            return 'robot program not running'
        if target is None:
            return 'no plan yet'
        if target.starved and self.p('hold_on_stale_inference'):
            return 'inference stale (plan ran out)'
        return ''

    def _control_loop(self) -> None:
        """Ticks at absolute times; a late tick is counted and the schedule resynchronized
        (never a burst of catch-up ticks)."""
        # A thread waking for its tick waits for the GIL until the running thread yields it,
        # up to the switch interval (5 ms by default): 0.5 ms bounds that wait (measured p99
        # 1.15 ms with a busy second thread, against 10 ms at the default).
        sys.setswitchinterval(CONTROL_SWITCH_INTERVAL_S)
        self._try_realtime()
        period = 1.0 / self.p('control_rate_hz')
        next_t = time.monotonic()
        while not self._control_stop.is_set():
            self._on_control()
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -period:
                next_t = time.monotonic()

    def _try_realtime(self) -> None:
        prio = self.p('control_rt_priority')
        if prio <= 0:
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))
            self.get_logger().info(f'control thread runs SCHED_FIFO priority {prio}')
        except (PermissionError, OSError) as e:
            self.get_logger().warn(f'control_rt_priority {prio} not applied ({e}); allow it '
                                   'with an rtprio limit (limits.conf) or CAP_SYS_NICE')

    def _stop_control(self) -> None:
        self._control_stop.set()
        if self._control_thread is not None:
            self._control_thread.join(timeout=5.0)
            if self._control_thread.is_alive():
                self.get_logger().error('control thread did not stop within 5 s')
            self._control_thread = None

    @guarded('control tick')
    def _on_control(self) -> None:
        t_mono = time.monotonic()
        if self._ticks and t_mono - self._ticks[-1] > 1.5 / self.p('control_rate_hz'):
            self._missed_ticks += 1
            if self._swap['state'] == 'loading':
                self._swap['missed'] += 1
        self._ticks.append(t_mono)
        if len(self._ticks) > 2000:
            del self._ticks[:1000]
        joints = self.slots.joints()
        if joints is None:
            return  # nothing to command relative to: the filter has no pose yet
        try:
            measured = self.adapter.joint_positions(joints.names, joints.positions)
        except KeyError as e:
            self._log_every('measured', 2.0, 'error', f'cannot command: {e}')
            return
        now = self.now_s()
        target = self.queue.target(now)
        fault = self._fault_now(now, target)
        merged = self.queue.chunks_merged
        if merged != self._seen_chunks:  # this tick is the first to use a new chunk
            self._seen_chunks = merged
            chunk = self.queue.last_chunk
            if chunk is not None:
                self.e2e_ms.append((now - chunk.stamp_s) * 1000.0)
                del self.e2e_ms[:-1000]
        joint_target = None
        if target is not None:
            joint_target, _grippers = self.adapter.joint_targets(target.position, measured)
        dt = 1.0 / self.p('control_rate_hz')
        with self._safety_lock:
            cmd = self.safety.step(joint_target, measured, dt, fault, self._external_scale)
        if cmd.state == 'holding':
            self._log_every('hold', 2.0, 'warn', f'holding: {cmd.reason}')
        self._last_cmd = cmd
        mode = self.adapter.controller.mode
        if mode == 'position_stream':
            self._pubs['command'].publish(Float64MultiArray(data=cmd.positions.tolist()))
        elif mode == 'joint_state':
            msg = JointState(name=list(self.adapter.joint_names),
                             position=cmd.positions.tolist(), velocity=cmd.velocities.tolist())
            msg.header.stamp = self.get_clock().now().to_msg()
            self._pubs['command'].publish(msg)

    @guarded('trajectory update')
    def _on_trajectory(self) -> None:
        """Trajectory controllers: the plan ahead, through the safety filter, at a lower rate;
        a hold when the filter is not tracking."""
        last = self._last_cmd
        joints = self.slots.joints()
        if last is None or joints is None:
            return
        now = self.now_s()
        msg = JointTrajectory()
        msg.joint_names = list(self.adapter.joint_names)
        view = self.queue.plan_view(now, step_s=0.1) if last.state == 'engaged' else None
        safe = None
        if view is not None:
            measured = self.adapter.joint_positions(joints.names, joints.positions)
            points = np.stack([self.adapter.joint_targets(p, measured)[0]
                               for p in view.positions])
            with self._safety_lock:
                safe = self.safety.filter_trajectory(view.time_from_start_s, points,
                                                     self._external_scale)
        if safe is not None and len(safe[0]) < 2:
            safe = None  # nothing ahead of now: hold rather than send an empty trajectory
        if safe is None:  # hold where the filter's command is now, at rest
            pt = JointTrajectoryPoint(positions=last.positions.tolist(),
                                      velocities=[0.0] * len(last.positions))
            pt.time_from_start = duration_msg(0.1)
            msg.points.append(pt)
        else:
            times, pos, vel = safe
            for t, p, v in zip(times[1:], pos[1:], vel[1:], strict=True):
                pt = JointTrajectoryPoint(positions=p.tolist(), velocities=v.tolist())
                pt.time_from_start = duration_msg(float(t))
                msg.points.append(pt)
        self._pubs['command'].publish(msg)
