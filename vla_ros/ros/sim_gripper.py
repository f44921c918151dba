"""A control_msgs/GripperCommand action server in front of a SimGripper, standing in for a
gripper driver (xarm_api's `xarm_gripper/gripper_action`, franka_gripper's
`gripper_action`, a GripperActionController's `gripper_cmd`).

As those servers do: a goal moves the gripper to `command.position` (clamped into the joint
range); a new goal pre-empts the active one (aborted, or canceled if a cancel was asked for);
a cancel is accepted; the result carries the position reached and `reached_goal` /
`stalled` (an object in the way ends the goal as succeeded with stalled = True, as a
GripperActionController with allow_stalling does). A non-finite position is rejected.

Threads: every callback and `step` run on the sim robot's executor thread. A goal stays
accepted (not executing) while the fingers move, and its execute callback runs only once it
is over: an execute callback that waited would block that single-threaded executor (and
an awaiting coroutine is polled by rclpy in a busy loop).
"""

from __future__ import annotations

import math

from control_msgs.action import GripperCommand
from rclpy.action import ActionServer, CancelResponse, GoalResponse

from vla_ros.sim.gripper import SimGripper

FEEDBACK_PERIOD_S = 1.0 / 30.0  # franka_gripper's feedback rate


class SimGripperServer:
    def __init__(self, node, sim: SimGripper, action_name: str) -> None:
        self.sim = sim
        self.accepting = True  # False: every goal is rejected (a driver in an error state)
        self.goals: list[dict] = []  # every goal received, with how it ended
        self._active = None  # (goal handle, its record in `goals`)
        self._ended: dict[bytes, tuple[str, GripperCommand.Result]] = {}
        self._since_feedback = 0.0
        self.server = ActionServer(
            node, GripperCommand, action_name, execute_callback=self._finish,
            goal_callback=self._on_goal, cancel_callback=lambda _goal: CancelResponse.ACCEPT,
            handle_accepted_callback=self._on_accepted)

    def _on_goal(self, request: GripperCommand.Goal) -> GoalResponse:
        cmd = request.command
        if self.accepting and math.isfinite(cmd.position):
            return GoalResponse.ACCEPT
        self.goals.append({'position': cmd.position, 'max_effort': cmd.max_effort,
                           'outcome': 'rejected'})
        return GoalResponse.REJECT

    def _on_accepted(self, goal_handle) -> None:
        if self._active is not None:
            self._end('preempted')
        cmd = goal_handle.request.command
        record = {'position': cmd.position, 'max_effort': cmd.max_effort, 'outcome': ''}
        self.goals.append(record)
        self.sim.command(cmd.position)
        self._active = (goal_handle, record)

    def step(self, dt: float) -> None:
        """After the gripper moved: ends the active goal if it is over, else feedback."""
        if self._active is None:
            return
        goal_handle, _ = self._active
        if goal_handle.is_cancel_requested:
            self._end('canceled')
        elif self.sim.reached:
            self._end('succeeded')
        elif self.sim.stalled:
            self._end('stalled')
        else:
            self._since_feedback += dt
            if self._since_feedback >= FEEDBACK_PERIOD_S:
                self._since_feedback = 0.0
                goal_handle.publish_feedback(GripperCommand.Feedback(
                    position=self.sim.position, stalled=False, reached_goal=False))

    def _end(self, outcome: str) -> None:
        goal_handle, record = self._active
        self._active = None
        if goal_handle.is_cancel_requested:
            outcome = 'canceled'
        record['outcome'] = outcome
        result = GripperCommand.Result(position=self.sim.position, effort=0.0,
                                       stalled=outcome == 'stalled',
                                       reached_goal=outcome == 'succeeded')
        self._ended[bytes(goal_handle.goal_id.uuid)] = (outcome, result)
        goal_handle.execute(self._finish)

    def _finish(self, goal_handle) -> GripperCommand.Result:
        """The execute callback, run once the goal is over: its terminal state and result."""
        outcome, result = self._ended.pop(bytes(goal_handle.goal_id.uuid))
        if outcome == 'canceled':
            goal_handle.canceled()
        elif outcome in ('succeeded', 'stalled'):
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result

    def destroy(self) -> None:
        self.server.destroy()
