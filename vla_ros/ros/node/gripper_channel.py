"""One gripper's command interface on the vla_policy node: its rclpy ActionClient(s) and the
goal in flight.

The driver's interface: control_msgs/GripperCommand on the gripper's action (xArm
`xarm_gripper/gripper_action`, Franka `franka_gripper/gripper_action`, Robotiq on UR
`robotiq_gripper_controller/gripper_cmd`), or, for a Franka Hand configured so, franka_msgs
Move (open) and Grasp (close) on `franka_gripper/move` / `franka_gripper/grasp`. Names are
relative, so the node's namespace and remaps apply.

Threads: `submit` is called from the control thread (or a transition) and only stores the
goal and triggers a guard condition; it never waits. Everything that touches the action
clients runs on the executor: the guard condition and a retry timer in this channel's
mutually exclusive group, the goal-response and result callbacks as executor tasks (any
thread), so the channel's state is under `_lock`. A new goal pre-empts the one in flight:
cancel it and, once the cancel is answered, send (two services: sent at once, the server
could take the new goal first and then cancel nothing). Failures (server unavailable, no
answer, rejected, aborted, canceled by the server) are kept for diagnostics and logged,
rate-limited; none raises.
"""

from __future__ import annotations

import threading
import time

from action_msgs.msg import GoalStatus
from control_msgs.action import GripperCommand
from rclpy.action import ActionClient
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

from vla_ros.adapters.gripper_filter import GripperGoal
from vla_ros.adapters.robots import Gripper

GRIPPER_INTERFACES = ('gripper_command', 'franka_move_grasp')
RETRY_PERIOD_S = 0.5  # how often a goal waiting for its server is tried again
WAIT_S = 0.5  # the longest a new goal waits for the server's answer to the one before
ANSWER_TIMEOUT_S = 2.0  # a goal not answered by then is sent again
LOG_PERIOD_S = 2.0
FRANKA_SPEED_MPS = 0.1  # franka_gripper's default speed
# Grasp succeeds when the opening ends within [width - inner, width + outer]: inner is
# franka_gripper's default, outer the whole stroke, so any object narrower than the open
# hand counts as grasped.
FRANKA_EPSILON_INNER_M = 0.005
FRANKA_EPSILON_OUTER_M = 0.08
FAILED_STATES = ('server unavailable', 'no answer', 'rejected', 'aborted',
                 'canceled by the server', 'failed')


class GripperInterfaceError(ValueError):
    """The configured gripper interface cannot be used; the message says what to do."""


def franka_actions():
    """franka_msgs' Move and Grasp actions, imported only when asked for (franka_ros2 is not
    on every machine, nor in every ROS distribution)."""
    try:
        from franka_msgs.action import Grasp, Move
    except ImportError as e:
        raise GripperInterfaceError(
            f"gripper_interface 'franka_move_grasp' needs franka_msgs (franka_ros2's "
            f'interfaces), which cannot be imported here ({e}). Install franka_ros2 (Humble: '
            "ros-humble-franka-msgs), or set gripper_interface to 'gripper_command' to use "
            'franka_gripper/gripper_action.') from e
    return Move, Grasp


class GripperChannel:
    """Sends a gripper's goals; see the module docstring for the threads."""

    def __init__(self, node, gripper: Gripper, interface: str, log) -> None:
        """`log(key, period_s, level, message)`: the node's rate-limited logger."""
        if interface not in GRIPPER_INTERFACES:
            raise GripperInterfaceError(f'gripper_interface {interface!r} is not one of '
                                        f'{GRIPPER_INTERFACES}')
        self.gripper, self.interface = gripper, interface
        self._node, self._log = node, log
        self._lock = threading.Lock()
        self._pending: GripperGoal | None = None  # submitted, not sent yet
        self._seq = 0  # goals sent; the latest is the only one that counts
        self._active = None  # (seq, ClientGoalHandle) accepted and not finished
        self._waiting = None  # (future, since, goal or None for a cancel): the answer awaited
        self._cancelled: set[int] = set()  # goals we cancelled: their end is no failure
        self._unavailable_for: GripperGoal | None = None  # counted once per goal
        self._closed = False
        self.goal: GripperGoal | None = None  # the last goal submitted
        self.state = 'idle'
        self.failures = 0
        self.last_error = ''
        self.sent = 0
        group = MutuallyExclusiveCallbackGroup()
        if interface == 'franka_move_grasp':
            if not (gripper.move_action and gripper.grasp_action):
                raise GripperInterfaceError(
                    f"gripper_interface 'franka_move_grasp' is for the Franka Hand; gripper "
                    f'{gripper.action_name} ({gripper.joint}) has no move/grasp actions. Set '
                    "gripper_interface to 'gripper_command'.")
            move, grasp = franka_actions()
            # (type, name) to open (False) and to close (True)
            self._actions = {False: (move, gripper.move_action),
                             True: (grasp, gripper.grasp_action)}
        else:
            self._actions = {c: (GripperCommand, gripper.action_server) for c in (False, True)}
        clients = {spec: ActionClient(node, spec[0], spec[1], callback_group=group)
                   for spec in dict.fromkeys(self._actions.values())}
        self._clients = {c: clients[spec] for c, spec in self._actions.items()}
        self._wake = node.create_guard_condition(self._dispatch, callback_group=group)
        self._retry = node.create_timer(RETRY_PERIOD_S, self._dispatch, callback_group=group)

    @property
    def action_names(self) -> list[str]:
        """The resolved names of this channel's actions (namespace and remaps applied)."""
        names = [name for _, name in dict.fromkeys(self._actions.values())]
        if not hasattr(self._node, 'resolve_topic_name'):  # Humble's rclpy lacks it
            return names
        return [self._node.resolve_topic_name(n) for n in names]

    @property
    def failing(self) -> bool:
        return self.state in FAILED_STATES

    # --- any thread --------------------------------------------------------------------------

    def submit(self, goal: GripperGoal) -> None:
        """Queues `goal` (replacing one not yet sent) and wakes the executor. Never waits."""
        with self._lock:
            if self._closed:
                return
            self._pending = self.goal = goal
            self._wake.trigger()

    def wait_sent(self, timeout_s: float) -> bool:
        """True once no goal is waiting to be sent (bounded; for the stop on deactivate)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            with self._lock:
                if self._pending is None:
                    return True
            time.sleep(0.01)
        return False

    def destroy(self) -> None:
        with self._lock:  # no trigger after this: the guard condition goes away
            self._closed = True
            self._pending = None
        self._node.destroy_timer(self._retry)
        self._node.destroy_guard_condition(self._wake)
        for client in dict.fromkeys(self._clients.values()):
            client.destroy()

    # --- executor ----------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Sends the pending goal, in order: wait for the answer to the goal in flight (if
        any), cancel it and wait for the cancel's answer, then send. Each wait is bounded
        by WAIT_S (a server that does not answer does not stop the next goal); the answers
        wake this up again."""
        with self._lock:
            goal, waiting = self._pending, self._waiting
            if self._closed:
                return
        if waiting is not None and not waiting[0].done():
            age = time.monotonic() - waiting[1]
            if goal is None and waiting[2] is not None and age >= ANSWER_TIMEOUT_S:
                self._resend(waiting)
                return
            if age < WAIT_S:
                return
        if goal is None:
            return
        client = self._clients[goal.closed]
        if not client.server_is_ready():
            first = self._unavailable_for is not goal
            self._unavailable_for = goal
            self._fail('server unavailable', f'{self._name(goal)} is not available; the '
                       f'goal is sent when it is (tried every {RETRY_PERIOD_S} s)', first)
            return
        with self._lock:
            if self._pending is not goal or self._closed:
                return  # a newer goal came in meanwhile: its own wake-up sends it
            active, self._active = self._active, None
            if active is not None:  # pre-empt it: cancel first, send once that is answered
                self._cancelled.add(active[0])
                cancel = active[1].cancel_goal_async()
                self._waiting = (cancel, time.monotonic(), None)
            else:
                cancel = None
        if cancel is not None:  # (outside the lock: a done future calls back at once)
            cancel.add_done_callback(lambda _f: self._poke())
            return
        with self._lock:
            if self._pending is not goal or self._closed:
                return
            self._pending = None
            self._seq += 1
            seq = self._seq
            self.state = 'sent'
            self.sent += 1
            future = client.send_goal_async(self._goal_msg(goal))
            self._waiting = (future, time.monotonic(), goal)
        future.add_done_callback(lambda f: self._on_response(seq, goal, f))

    def _poke(self) -> None:
        with self._lock:
            if not self._closed:
                self._wake.trigger()

    def _resend(self, waiting) -> None:
        """A goal the server never answered (it went away after being discovered): sent
        again, as a new goal; an answer to the old one, should it come, cancels that one."""
        with self._lock:
            if self._pending is not None or self._waiting is not waiting:
                return
            self._pending, self._waiting = waiting[2], None
            self._seq += 1  # the unanswered goal is no longer the latest
        self._fail('no answer', f'{self._describe(waiting[2])} got no answer within '
                   f'{ANSWER_TIMEOUT_S} s; sending it again')

    def _on_response(self, seq: int, goal: GripperGoal, future) -> None:
        handle = future.result()
        if handle is None:
            return  # the client went away (cleanup)
        with self._lock:
            latest = seq == self._seq
            if latest and handle.accepted:
                self._active = (seq, handle)
                self.state = 'active'
        if not handle.accepted:
            if latest:
                self._fail('rejected', f'{self._describe(goal)} was rejected')
        elif not latest:  # sent anyway after WAIT_S: it is no longer wanted
            with self._lock:
                self._cancelled.add(seq)
            handle.cancel_goal_async()
        else:
            handle.get_result_async().add_done_callback(
                lambda f: self._on_result(seq, goal, f))
        self._poke()  # a goal submitted meanwhile may go now

    def _on_result(self, seq: int, goal: GripperGoal, future) -> None:
        response = future.result()
        if response is None:
            return
        with self._lock:
            if self._active is not None and self._active[0] == seq:
                self._active = None
            if seq in self._cancelled or seq != self._seq:
                self._cancelled.discard(seq)
                return  # a pre-empted goal: its cancel was ours
        status, result = response.status, response.result
        if self.interface == 'franka_move_grasp':
            if status == GoalStatus.STATUS_SUCCEEDED and result.success:
                self._done('succeeded')
            else:
                self._fail('failed', f'{self._describe(goal)} failed (status {status}): '
                           f'{result.error or "no error given"}')
        elif status == GoalStatus.STATUS_SUCCEEDED:
            self._done('stalled' if result.stalled and not result.reached_goal else
                       'succeeded')
        elif status == GoalStatus.STATUS_ABORTED and result.stalled:
            # Fingers held by an object: a GripperActionController without allow_stalling
            # aborts then, and the object is held.
            self._done('stalled')
        elif status == GoalStatus.STATUS_CANCELED:
            self._fail('canceled by the server', f'{self._describe(goal)} was canceled by '
                       'the server')
        else:
            self._fail('aborted', f'{self._describe(goal)} ended with status {status} at '
                       f'position {result.position:.4f}')

    # --- helpers -----------------------------------------------------------------------------

    def _goal_msg(self, goal: GripperGoal):
        if self.interface == 'gripper_command':
            msg = GripperCommand.Goal()
            msg.command.position = goal.position
            msg.command.max_effort = goal.max_effort
            return msg
        msg = self._actions[goal.closed][0].Goal()
        msg.width = 2.0 * goal.position  # the opening between both fingers
        msg.speed = FRANKA_SPEED_MPS
        if goal.closed:
            msg.force = goal.max_effort
            msg.epsilon.inner = FRANKA_EPSILON_INNER_M
            msg.epsilon.outer = FRANKA_EPSILON_OUTER_M
        return msg

    def _done(self, state: str) -> None:
        with self._lock:
            self.state = state

    def _fail(self, state: str, message: str, count: bool = True) -> None:
        with self._lock:
            self.state = state
            self.last_error = message
            if count:
                self.failures += 1
        self._log(f'gripper-{self.gripper.action_name}-{state}', LOG_PERIOD_S, 'error',
                  f'gripper {self.gripper.action_name}: {message}')

    def _name(self, goal: GripperGoal) -> str:
        return self._actions[goal.closed][1]

    def _describe(self, goal: GripperGoal) -> str:
        what = 'close' if goal.closed else 'open'
        return (f'{what} goal (position {goal.position:.4f}, max_effort '
                f'{goal.max_effort:.1f}) on {self._name(goal)}')
