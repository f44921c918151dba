"""The vla_policy node's grippers: the model's gripper entries through the gripper filter
(vla_ros/adapters/gripper_filter.py) to each robot's real interface.

- A gripper behind a driver action (xArm, Franka Hand, Robotiq on UR) gets a GripperChannel
  (gripper_channel.py), created in on_configure and destroyed in on_cleanup. Each control
  tick its filter tracks the model while the arm's safety filter tracks, and applies
  `gripper_fault_behavior` on the tick the arm filter holds (any fault, the e-stop) and when
  the node leaves active; only a changed command becomes a goal.
- A gripper that is a joint of the arm's command (AgiBot G1 on /joint_command) gets the same
  hysteresis and dwell on its joint target, and then the arm's safety filter like every
  joint: on a fault it holds with the arm (the fault behaviour cannot move a joint the filter
  holds).
The gripper state the model sees is still read from joint_states (the adapter).
Threads: the control thread owns the filters and calls `_tick_grippers`; a transition calls
`_stop_grippers` after the control thread stopped; channels hand goals to the executor.
Mixed into VlaPolicyNode (policy_node.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np

from vla_ros.adapters.adapter import GripperTarget
from vla_ros.adapters.gripper_filter import GripperFilter, GripperFilterConfig
from vla_ros.ros.node.gripper_channel import GripperChannel, GripperInterfaceError

STOP_SEND_TIMEOUT_S = 0.5  # how long leaving active waits for the fault goal to go out
# node parameter -> GripperFilterConfig field
CONFIG_PARAMS = {'gripper_open_threshold': 'open_threshold',
                 'gripper_close_threshold': 'close_threshold',
                 'gripper_min_dwell_s': 'min_dwell_s',
                 'gripper_fault_behavior': 'fault_behavior',
                 'gripper_max_effort': 'max_effort'}


class GripperMixin:
    """Gripper filters and channels: created, ticked, stopped, reported, destroyed."""

    def _create_grippers(self) -> None:
        """on_configure, after the adapter: ValueError (the reason) when the configuration
        does not fit the robot."""
        cfg = self._gripper_config()
        interface = self.p('gripper_interface')
        joints = self.adapter.joint_names
        for _, g in self.adapter.action_grippers:
            if g.joint in joints:
                self._joint_grippers.append((GripperFilter(g, cfg), joints.index(g.joint)))
            elif g.action_server:
                channel = GripperChannel(self, g, interface, self._log_every)
                self._gripper_channels.append((GripperFilter(g, cfg), channel))
            else:
                raise GripperInterfaceError(
                    f'gripper {g.action_name} of {self.adapter.robot.name} is neither a '
                    'commanded joint nor behind a driver action; nothing could command it')
        if interface != 'gripper_command' and not self._gripper_channels:
            self.get_logger().warn(f'gripper_interface {interface!r} has no effect: the model '
                                   f'commands no gripper of {self.adapter.robot.name} through '
                                   'a driver action')

    def _gripper_config(self) -> GripperFilterConfig:
        return GripperFilterConfig(**{f: self.p(n) for n, f in CONFIG_PARAMS.items()})

    def _destroy_grippers(self) -> None:
        for _, channel in self._gripper_channels:
            channel.destroy()
        self._gripper_channels = []
        self._joint_grippers = []

    def _set_gripper_config(self, name: str, value) -> None:
        """A dynamic gripper parameter, already checked: every filter takes the new config
        (a frozen dataclass swapped whole, so the control thread reads one or the other)."""
        for f, _ in self._gripper_channels + self._joint_grippers:
            f.config = replace(f.config, **{CONFIG_PARAMS[name]: value})
        link = self._link
        if link is not None:  # the joint grippers' filters of the control process
            link.send('gripper_config', replace(self._gripper_config(),
                                                      **{CONFIG_PARAMS[name]: value}))

    # --- control thread ----------------------------------------------------------------------

    def _gripper_target_fault(self, targets: list[GripperTarget]) -> str:
        return gripper_target_fault(targets)

    def _filter_joint_grippers(self, target: np.ndarray, measured: np.ndarray,
                               t_mono: float) -> np.ndarray:
        return filter_joint_grippers(self._joint_grippers, target, measured, t_mono)

    def _tick_grippers(self, state: str, reason: str, targets: list[GripperTarget] | None,
                       t_mono: float) -> None:
        """After the safety filter's step: track while it tracks, the fault behaviour while
        it holds, nothing while disengaged (no motion before engage)."""
        if not self._gripper_channels:
            return
        if state == 'engaged' and targets is not None:
            by_name = {t.gripper.action_name: t.position for t in targets}
            for f, channel in self._gripper_channels:
                position = by_name.get(f.gripper.action_name)
                if position is None:
                    continue
                goal = f.track(t_mono, f.gripper.closure(position))
                if goal is not None:
                    channel.submit(goal)
        elif state in ('holding', 'estop'):
            for f, channel in self._gripper_channels:
                goal = f.fault(t_mono, reason or state)
                if goal is not None:
                    channel.submit(goal)

    # --- transitions -------------------------------------------------------------------------

    def _stop_grippers(self, why: str) -> None:
        """Leaving active (the control thread has stopped): the fault behaviour, sent before
        the transition ends (bounded)."""
        now = time.monotonic()
        for f, channel in self._gripper_channels:
            goal = f.fault(now, why)
            if goal is not None:
                channel.submit(goal)
                if not channel.wait_sent(STOP_SEND_TIMEOUT_S):
                    self.get_logger().error(f'{why}: gripper {f.gripper.action_name} goal '
                                            f'not sent: {channel.state}')

    # --- status ------------------------------------------------------------------------------

    def _gripper_status(self) -> tuple[dict[str, str], bool]:
        """Diagnostic values of every gripper with a channel, and whether one is failing."""
        values, failing = {}, False
        for f, channel in self._gripper_channels:
            name = f.gripper.action_name
            goal = channel.goal
            values[f'{name}_command'] = (
                'none' if goal is None else
                f'{"closed" if goal.closed else "open"} {goal.position:.4f} effort '
                f'{goal.max_effort:.1f} ({goal.reason})')
            values[f'{name}_goal_state'] = channel.state
            values[f'{name}_goals_sent'] = str(channel.sent)
            values[f'{name}_failures'] = str(channel.failures)
            values[f'{name}_last_error'] = channel.last_error
            values[f'{name}_action'] = ', '.join(channel.action_names)
            failing = failing or channel.failing
        return values, failing


# --- the tick's gripper steps, shared with the control process (control_process.py) --------


def gripper_target_fault(targets: list[GripperTarget]) -> str:
    """A non-finite gripper value is a broken model output: the arm holds on it too."""
    bad = [t.gripper.action_name for t in targets if not math.isfinite(t.position)]
    return f'non-finite gripper target ({", ".join(bad)})' if bad else ''


def filter_joint_grippers(joint_grippers: list, target: np.ndarray, measured: np.ndarray,
                          t_mono: float) -> np.ndarray:
    """Gripper joints of the arm's command ((GripperFilter, joint index) pairs): their targets
    open or closed, with hysteresis and dwell; the measured position until the first decision.
    A non-finite value is left for the safety filter to hold on."""
    for f, j in joint_grippers:
        closure = f.gripper.closure(float(target[j]))
        if math.isnan(closure):
            continue
        f.track(t_mono, closure)
        target[j] = f.position(f.closed) if f.closed is not None else measured[j]
    return target
