"""The vla_policy node's control path: the control thread, its tick, and trajectory updates;
and the tick's message helpers, which the control process (control_process.py) uses too.

Threads (`control_process` false): `_control_loop` is its own thread (not an executor
timer; see policy_node.py) that owns the SafetyFilter through `_safety_lock` and publishes
every command: streamed setpoints each tick, and for trajectory controllers the plan ahead
every `trajectory_rate_hz` period (on the control thread's absolute schedule, so no period
is skipped or sent twice) and a hold at once, on the tick the filter stops tracking;
gripper goals follow the filter's state (gripper.py). Every tick runs the filter, whatever
the inputs: with joint states missing or incomplete it holds from its last command, so a
fault can never leave the arm on an old plan or end in a jump. Mixed into VlaPolicyNode.

The thread shares the GIL with the executor and the worker: on 2 loaded cores its p99
period error was 2.2x that of a bare loop beside it (README, performance), which is why the
loop runs in its own process by default (`control_process`, control_process.py).
The image-stamp -> command latency is taken when the command carrying the new chunk leaves.
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
from vla_ros.ros.node.ticks import SWITCH_INTERVAL_S, wait_for_next_tick


class ControlMixin:
    """The control thread: every command, streamed or trajectory, through the filter."""

    def _fault_now(self, now: float, target) -> str:
        if time.monotonic() - self._callback_fault_at < CALLBACK_FAULT_HOLD_S:
            return self._callback_fault
        stale = self.slots.staleness(now, self.p('max_staleness_ms') / 1000.0)
        if stale:
            return stale
        robot = self._robot_fault()
        if robot:
            return robot
        if target is None:
            return 'no plan yet'
        if target.starved and self.p('hold_on_stale_inference'):
            return 'inference stale (plan ran out)'
        return ''

    def _robot_fault(self) -> str:
        """The robot's program and speed slider, and the inference process: '' or why the
        arm must hold (also sent to the control process, control_remote.py)."""
        if not self._program_running:
            return 'robot program not running'
        if self._external_scale <= 0.0:  # the UR speed slider at 0: the robot will not move
            return 'robot speed scaling is 0'
        # A dead inference process: hold at once (not at the end of the executing chunk)
        # until the restarted one has delivered a chunk.
        worker = self.worker
        restarting = worker.stats.restart_state if worker is not None else ''
        if restarting:
            return f'inference process {restarting}'
        ended = getattr(worker.policy, 'ended', None) if worker is not None else None
        if ended is not None and ended():  # the worker restarts it
            return 'inference process ended'
        return ''

    def _control_loop(self) -> None:
        """Ticks at absolute times; a late tick is counted and the schedule resynchronized
        (never a burst of catch-up ticks)."""
        sys.setswitchinterval(SWITCH_INTERVAL_S)  # ticks.py: bounds the wait for the GIL
        self._try_realtime()
        period = 1.0 / self.p('control_rate_hz')
        next_t = time.monotonic()
        while not self._control_stop.is_set():
            self._on_control()
            next_t = wait_for_next_tick(next_t, period)

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

    def _count_tick(self, t_mono: float) -> None:
        period = 1.0 / self.p('control_rate_hz')
        if self._ticks:
            gap = t_mono - self._ticks[-1]
            if gap > 1.5 * period:  # a stall of n periods missed n - 1 ticks
                missed = max(1, int(round(gap / period)) - 1)
                self._missed_ticks += missed
                if self._swap['state'] == 'loading':
                    self._swap['missed'] += missed
        self._ticks.append(t_mono)
        if self._tick_log is not None:  # a bench records every tick while it runs
            self._tick_log.append(t_mono)
        if len(self._ticks) > 2000:
            del self._ticks[:1000]

    def _measured(self) -> tuple[np.ndarray | None, str]:
        """The arm's joint positions and '' ; or the last known ones and why they are not
        current (a joint missing from /joint_states, none received); None before any."""
        measured, why = read_measured(self.slots, self.adapter)
        if measured is not None:
            self._last_measured = measured
            return measured, ''
        if why != NO_JOINT_STATES:
            self._log_every('measured', 2.0, 'error', f'holding: {why}')
        return self._last_measured, why

    @guarded('control tick')
    def _on_control(self) -> None:
        t_mono = time.monotonic()
        self._count_tick(t_mono)
        measured, input_fault = self._measured()
        if measured is None:
            return  # the arm was never seen: nothing was ever commanded, nothing to hold
        now = self.now_s()
        target = self.queue.target(now)
        fault = input_fault or self._fault_now(now, target)
        merged = self.queue.chunks_merged
        if merged != self._seen_chunks:  # this tick is the first to use a new chunk
            self._seen_chunks = merged
            chunk = self.queue.last_chunk
            if chunk is not None:
                self._e2e_pending = chunk.stamp_s  # taken when a command carrying it leaves
        joint_target = grippers = None
        if target is not None and not fault:
            joint_target, grippers = self.adapter.joint_targets(target.position, measured)
            fault = self._gripper_target_fault(grippers)
            joint_target = None if fault else self._filter_joint_grippers(
                joint_target, measured, t_mono)
        dt = 1.0 / self.p('control_rate_hz')
        with self._safety_lock:
            cmd = self.safety.step(joint_target, measured, dt, fault, self._external_scale)
        self._tick_grippers(cmd.state, cmd.reason, grippers, t_mono)
        if cmd.state == 'holding':
            self._log_every('hold', 2.0, 'warn', f'holding: {cmd.reason}')
        previous, self._last_cmd = self._last_cmd, cmd
        mode = self.adapter.controller.mode
        if mode != 'trajectory':
            self._pubs['command'].publish(stream_message(
                mode, self.adapter.joint_names, cmd, self.get_clock().now().to_msg()))
        elif not self._tick_trajectory(cmd, previous, measured, now):
            return  # nothing left this tick: the chunk's latency is taken when a plan does
        if self._e2e_pending is not None and cmd.state == 'engaged':
            self.e2e_ms.append((self.now_s() - self._e2e_pending) * 1000.0)
            del self.e2e_ms[:-1000]
            self._e2e_pending = None

    def _tick_trajectory(self, cmd, previous, measured: np.ndarray, now: float) -> bool:
        """Trajectory controllers: the plan ahead every trajectory period; a hold at once on
        the tick the filter stops tracking (the controller would otherwise finish the old
        plan), then every period while it holds. True if a message was published."""
        every = max(1, int(round(self.p('control_rate_hz') / self.p('trajectory_rate_hz'))))
        due, self._trajectory_tick = trajectory_due(self._trajectory_tick, every, cmd, previous)
        if not due:
            return False
        view = self.queue.plan_view(now, step_s=0.1) if cmd.state == 'engaged' else None
        self._pubs['command'].publish(trajectory_update(
            view, self.adapter, self.safety, measured, self._external_scale,
            self._safety_lock))
        return True


# --- one tick's messages, shared with the control process (control_process.py) -------------


def stream_message(mode: str, joint_names, cmd, stamp):
    """A streamed command: Float64MultiArray (position_stream) or JointState (joint_state)."""
    if mode == 'position_stream':
        return Float64MultiArray(data=cmd.positions.tolist())
    msg = JointState(name=list(joint_names), position=cmd.positions.tolist(),
                     velocity=cmd.velocities.tolist())
    msg.header.stamp = stamp
    return msg


def trajectory_due(counter: int, every: int, cmd, previous) -> tuple[bool, int]:
    """Whether a trajectory message goes out this tick, and the counter's next value: every
    `every` ticks, and at once on the tick the filter stops tracking (the controller would
    otherwise finish the old plan)."""
    counter += 1
    stopped = cmd.state != 'engaged' and previous is not None and previous.state == 'engaged'
    if not stopped and counter % every != 0:
        return False, counter
    return True, 0


def trajectory_update(view, adapter, safety, measured: np.ndarray, external_scale: float,
                      lock) -> JointTrajectory:
    """The plan ahead through the filter (`view`: the plan from now, None unless engaged),
    or the braking hold when there is nothing to track. `lock` guards the filter."""
    safe = None
    if view is not None:
        points = np.stack([adapter.joint_targets(p, measured)[0] for p in view.positions])
        with lock:
            safe = safety.filter_trajectory(view.time_from_start_s, points, external_scale)
        if safe is not None and len(safe[0]) < 2:
            safe = None  # nothing ahead of now: hold rather than send an empty trajectory
    if safe is None:
        with lock:
            times, pos, vel = braking_trajectory(safety)
    else:
        times, pos, vel = (a[1:] for a in safe)  # the first point is now
    return trajectory_message(adapter.joint_names, times, pos, vel)


def trajectory_message(joint_names, times, pos, vel) -> JointTrajectory:
    msg = JointTrajectory()
    msg.joint_names = list(joint_names)
    for t, q, v in zip(times, pos, vel, strict=True):
        pt = JointTrajectoryPoint(positions=q.tolist(), velocities=v.tolist())
        pt.time_from_start = duration_msg(float(t))
        msg.points.append(pt)
    return msg


NO_JOINT_STATES = 'no joint_states received'


def read_measured(slots, adapter) -> tuple[np.ndarray | None, str]:
    """The arm's joint positions from the newest /joint_states and '', or None and why not (a
    joint missing from the message, none received). For the control thread and process."""
    joints = slots.joints()
    if joints is None:
        return None, NO_JOINT_STATES
    try:
        return adapter.joint_positions(joints.names, joints.positions), ''
    except KeyError as e:
        return None, f'joint_states incomplete: {e.args[0] if e.args else e}'


BRAKING_SAMPLE_S = 0.02
MIN_HOLD_S = 0.1


def braking_trajectory(safety, sample_s: float = BRAKING_SAMPLE_S
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The hold for a trajectory controller: from the filter's command and velocity, each
    joint decelerating at its acceleration limit (times the scale) to a standstill, sampled
    every `sample_s` (20 ms), ending at rest. The arm follows the filter's command, so this is
    reachable within the limits from where it is; at rest it is one point where it stands."""
    amax = safety.amax * safety.config.acceleration_scale
    p0, v0 = safety.cmd.copy(), safety.vel.copy()
    t_stop = np.abs(v0) / amax  # (J,)
    t_end = float(np.max(t_stop, initial=0.0))
    times = np.arange(sample_s, t_end, sample_s)
    times = np.append(times, max(t_end, MIN_HOLD_S))
    t = np.minimum(times[:, None], t_stop[None, :])  # (K, J): each joint stops at its t_stop
    decel = -np.sign(v0) * amax
    pos = p0 + v0 * t + 0.5 * decel * t * t
    vel = v0 + decel * t
    vel[-1] = 0.0
    pos = np.clip(pos, safety.lower, safety.upper)
    return times, pos, vel
