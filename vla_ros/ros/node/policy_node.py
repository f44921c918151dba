"""The `vla_policy` lifecycle node: cameras and joint states in, safe commands out.

Threads and what they own:
  executor callbacks  subscriptions store into InputSlots; services, parameters, status.
                      Four threads (make_executor): an e-stop is never queued behind a
                      parameter request or a lifecycle transition.
  control process     (`control_process`, the default) the control loop at control_rate_hz
                      with its own node, joint states, SafetyFilter and command publisher
                      (control_process.py); the node feeds it through control_link.py, whose
                      thread (`vla_control_link`) also takes its reports (control_remote.py).
  control thread      (`control_process` false) the same loop in this process: owns the
                      SafetyFilter through `_safety_lock` (which services and parameter
                      callbacks also take; in process mode it guards the filter's mirror)
                      and publishes the commands. A thread sleeping to absolute tick
                      times, not an executor timer: measured on 2 cores, an rclpy timer at
                      100 Hz in a MultiThreadedExecutor busy with two camera streams ran at
                      about half rate (period error p50 9.5 ms), inference in or out of process.
  worker thread       talks to the Policy (in a child process by default); reads InputSlots,
                      writes the ActionQueue.
  loader thread       (hot-swap only) loads and warms a new package, hands it to the worker.
This file holds the lifecycle and the ROS entities; the rest of
the node is mixed in from its own modules beside it: inputs.py (subscriptions, callbacks, the
worker's snapshot), control.py (control thread, trajectory updates), control_remote.py (the
requests to the filter in either mode, the control process's start, feed and end),
executor.py (the executor and its spin loop), gripper.py (gripper
filters and their action clients), engage.py (the engage gate, engage/reset services, the
stop on leaving active), swap.py (model loading and hot-swap), reconfigure.py (parameter
declaration and changes), status.py (~/status, /diagnostics), guard.py (the callback guard).
Transitions: configure loads and validates everything and warms up (FAILURE with the reason
on any error); activate starts the worker and the timers; deactivate stops them and holds;
cleanup releases everything. Faults never raise out of a callback: they end in a hold, a
diagnostic and a log line.
"""

from __future__ import annotations

import signal
import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from vla_ros.adapters.safety import SafetyConfig, SafetyFilter
from vla_ros.ros.conversions import s_to_stamp
from vla_ros.ros.node.control import ControlMixin
from vla_ros.ros.node.control_link import ControlProcessError
from vla_ros.ros.node.control_remote import RemoteControlMixin
from vla_ros.ros.node.engage import ENGAGE_ON_ACTIVATE_TIMEOUT_S, EngageMixin
from vla_ros.ros.node.executor import EXECUTORS, make_executor, spin_until  # noqa: F401
from vla_ros.ros.node.gripper import GripperMixin
from vla_ros.ros.node.guard import duration_msg
from vla_ros.ros.node.inputs import InputsMixin
from vla_ros.ros.node.params import PARAMS
from vla_ros.ros.node.reconfigure import ReconfigureMixin
from vla_ros.ros.node.slots import InputSlots
from vla_ros.ros.node.status import StatusMixin
from vla_ros.ros.node.swap import LOAD_ERRORS, SwapMixin
from vla_ros.runtime.chunking.action_queue import ActionQueue
from vla_ros.runtime.chunking.merge import make_strategy
from vla_ros.runtime.chunking.scheduling import RequestPolicy
from vla_ros.runtime.policy.guidance import guided_support
from vla_ros.runtime.serving.worker import InferenceWorker


class VlaPolicyNode(InputsMixin, ControlMixin, RemoteControlMixin, GripperMixin, EngageMixin,
                    SwapMixin, ReconfigureMixin, StatusMixin, LifecycleNode):
    """Lifecycle and wiring; the parts live beside this file (see the module docstring)."""

    def __init__(self, **kwargs) -> None:
        super().__init__('vla_policy', **kwargs)
        self._safety_lock = threading.Lock()
        self._plan_lock = threading.Lock()  # the plan sent to the control process
        self._reset_state()
        self._param_errors = self._declare_parameters()
        for reason in self._param_errors.values():
            self.get_logger().error(f'parameter rejected at start, configure will fail: '
                                    f'{reason}')
        if hasattr(self, 'add_pre_set_parameters_callback'):  # Iron and later
            self.add_pre_set_parameters_callback(self._coerce_parameters)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _reset_state(self) -> None:
        self.manifest = self.policy = self.adapter = self.queue = self.safety = None
        self.model_path = ''
        self.worker: InferenceWorker | None = None
        self.slots: InputSlots | None = None
        self._subs, self._srvs, self._timers, self._pubs = [], [], [], {}
        self._gripper_channels = []  # (GripperFilter, GripperChannel): driver actions
        self._joint_grippers = []  # (GripperFilter, joint index): grippers commanded as joints
        self._external_scale = 1.0
        self._program_running = True
        self._fault = ''
        self._callback_fault = ''
        self._callback_fault_at = -1e9
        self._callback_errors = 0
        self._last_log = {}
        self._swap = {'state': 'idle', 'detail': '', 'started': 0.0, 'missed': 0}
        self._control_stop = threading.Event()
        self._control_thread: threading.Thread | None = None
        self._link = None  # ControlLink, while the control process runs
        self._control_ended = ''  # why the control process ended unasked
        self._control_measured = False  # the control process has seen the arm
        self._last_report_at = 0.0  # the control process's last reported tick (monotonic)
        self._ticks = []  # control tick times (monotonic), bounded below
        self._tick_log: list[float] | None = None  # every tick, while a bench records
        self._e2e_pending: float | None = None  # stamp of a new chunk not yet commanded
        self._missed_ticks = 0
        self._seen_chunks = 0
        self.e2e_ms: list[float] = []  # observation stamp -> first command sent using its chunk
        self._last_cmd = None
        self._last_measured = None  # the arm's last complete joint positions
        self._trajectory_tick = 0
        self._active = False
        self._engage_until = None  # engage_on_activate: retry until joint states arrive

    # --- helpers -----------------------------------------------------------------------------

    def p(self, name: str):
        return self.get_parameter(name).value

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _log_every(self, key: str, period_s: float, level: str, msg: str) -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) < period_s:
            return
        self._last_log[key] = now
        # rclpy fixes the severity per call site and raises if one site logs at two levels:
        # one call site per level.
        logger = self.get_logger()
        if level == 'error':
            logger.error(msg)
        elif level == 'warn':
            logger.warn(msg)
        else:
            logger.info(msg)

    # --- lifecycle ---------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Loads the package and the robot adapter, warms up, creates the ROS entities.
        SUCCESS -> inactive; FAILURE (reason logged and on ~/status) -> unconfigured."""
        path = self.p('model_path')
        problems = list(self._param_errors.values()) + [
            r for p in PARAMS if p.name not in self._param_errors
            for r in [p.check(self.p(p.name))] if r]
        if not path:
            problems.append('model_path is empty; set it to a model package')
        if problems:
            self.get_logger().error(f'configure failed: {"; ".join(problems)}')
            self._fault = '; '.join(problems)
            return TransitionCallbackReturn.FAILURE
        t0 = time.monotonic()
        try:
            self.manifest, self.adapter, self.policy = self._build_policy(path)
            if self.p('merge_strategy') == 'rtc_guided' and guided_support(self.manifest):
                raise ValueError(guided_support(self.manifest))
            self.model_path = path
            robot = self.adapter.robot
            safety_cfg = SafetyConfig(self.p('position_margin'), self.p('speed_scale'),
                                      self.p('acceleration_scale'))
            self.safety = SafetyFilter(self.adapter.lower, self.adapter.upper,
                                       self.adapter.velocity, self.adapter.acceleration,
                                       safety_cfg, self.adapter.commanded)
            self._create_grippers()
        except LOAD_ERRORS as e:
            self.get_logger().error(f'configure failed: {type(e).__name__}: {e}')
            self._destroy_grippers()  # a failed configure leaves no action client either
            if self.policy is not None:  # a failed configure leaves no inference process
                self.policy.close()
            self._reset_state()
            self._fault = str(e)  # kept for whoever inspects the failed transition
            return TransitionCallbackReturn.FAILURE
        m = self.manifest
        self.queue = ActionQueue(m.action.dim, self._strategy(),
                                 interpolation=self.p('interpolation'),
                                 latency_compensation=self.p('latency_compensation'))
        self.slots = InputSlots(list(self.p('camera_names')))
        self.slots.instruction = self.p('instruction')
        self._create_entities(robot)
        self.worker = InferenceWorker(
            self.policy, self.queue, self.now_s, self._observe,
            request=RequestPolicy('horizon_fraction', self.p('request_fraction')),
            on_chunk=self._on_chunk, on_fault=self._on_worker_fault,
            deadline_ms=self.p('deadline_ms') or None,
            rtc_prefix=self.p('merge_strategy') in ('rtc_inpaint', 'rtc_guided'),
            added_latency_s=self.p('added_latency_ms') / 1000.0)
        self.get_logger().info(
            f'configured {m.name} ({m.family}/{m.head.type}) for {robot.name} via '
            f'{self.adapter.controller.mode} on {self._command_topic()} in '
            f'{time.monotonic() - t0:.1f} s; {self.policy.describe()}')
        self.get_logger().info(f'topics (resolved): {self._resolved_topics()}')
        return TransitionCallbackReturn.SUCCESS

    def _resolved_topics(self) -> str:
        """What the namespace and remappings made of each input and the command topic."""
        subs = ', '.join(dict.fromkeys(s.topic_name for s in self._subs))
        return f'command {self._pubs["command"].topic_name}; inputs {subs}'

    def _strategy(self):
        name = self.p('merge_strategy')
        return make_strategy(name, schedule=self.p('rtc_schedule')) if name == 'rtc_blend' \
            else make_strategy(name)

    def _command_topic(self) -> str:
        return self.p('command_topic') or self.adapter.controller.topic

    def _create_entities(self, robot) -> None:
        self._create_inputs(robot)
        mode = self.adapter.controller.mode
        cmd_type = {'position_stream': Float64MultiArray, 'joint_state': JointState,
                    'trajectory': JointTrajectory}[mode]
        self._pubs['command'] = self.create_lifecycle_publisher(
            cmd_type, self._command_topic(), QoSProfile(depth=1))
        self._pubs['chunk'] = self.create_lifecycle_publisher(
            JointTrajectory, '~/action_chunk', QoSProfile(depth=1))
        self._pubs['status'] = self.create_lifecycle_publisher(
            DiagnosticStatus, '~/status', QoSProfile(depth=1))
        self._pubs['diagnostics'] = self.create_lifecycle_publisher(
            DiagnosticArray, '/diagnostics', QoSProfile(depth=10))
        self._srvs.append(self.create_service(SetBool, '~/engage', self._on_engage))
        self._srvs.append(self.create_service(Trigger, '~/reset', self._on_reset))

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Starts the worker, the control thread and the status timer. SUCCESS -> active."""
        try:
            self._start_control()
        except ControlProcessError as e:
            self.get_logger().error(f'activate failed: {e}')
            self._fault = str(e)
            return TransitionCallbackReturn.FAILURE
        super().on_activate(state)
        self._timers.append(self.create_timer(0.5, self._on_status,
                                              MutuallyExclusiveCallbackGroup()))
        self.worker.start()
        self._active = True
        self.get_logger().info('activated: inferring; no motion before ~/engage')
        if self.p('engage_on_activate'):
            # Joint states may not have arrived yet (a launch starts everything at once):
            # retry until they do, for a bounded time.
            self._engage_until = time.monotonic() + ENGAGE_ON_ACTIVATE_TIMEOUT_S
            self._timers.append(self.create_timer(0.2, self._retry_engage,
                                                  MutuallyExclusiveCallbackGroup()))
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Brings the arm to rest, then stops the control thread and the worker (joined
        with a timeout) and sends the grippers' fault behaviour. -> inactive; engage again
        after the next activate."""
        self._bring_to_rest('deactivate')
        for t in self._timers:
            self.destroy_timer(t)
        self._timers = []
        self._stop_control()
        self._stop_grippers('deactivate')
        if self.worker and not self.worker.stop(timeout_s=10.0):
            self.get_logger().error('inference worker did not stop within 10 s')
        self.queue.clear()
        super().on_deactivate(state)
        self.get_logger().info('deactivated')
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroys the ROS entities and releases the model. -> unconfigured."""
        self._release()
        self.get_logger().info('cleaned up: unconfigured')
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From any state: brings the arm to rest if it was active (and sends the grippers'
        fault behaviour), releases everything."""
        was_active = self._active
        if was_active:
            self._bring_to_rest('shutdown')
        for t in self._timers:
            self.destroy_timer(t)
        self._stop_control()
        if was_active:
            self._stop_grippers('shutdown')
        if self.worker:
            self.worker.stop(timeout_s=10.0)
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Stops the threads this node started before its entities go away, whatever
        lifecycle state it is in (a process may end without a deactivate transition)."""
        self._stop_control()
        if self.worker is not None:
            self.worker.stop(timeout_s=10.0)
        if self.policy is not None:
            self.policy.close()
            self.policy = None
        super().destroy_node()

    def _release(self) -> None:
        self._destroy_grippers()
        for s in self._subs:
            self.destroy_subscription(s)
        for s in self._srvs:
            self.destroy_service(s)
        for p in self._pubs.values():
            self.destroy_lifecycle_publisher(p)
        if self.policy is not None:
            self.policy.close()
        self._reset_state()

    # --- worker callbacks --------------------------------------------------------------------

    def _on_chunk(self, chunk, report) -> None:
        msg = JointTrajectory()
        s_to_stamp(chunk.stamp_s, msg.header.stamp)
        msg.joint_names = list(self.manifest.action.names)
        for k, row in enumerate(chunk.actions):
            pt = JointTrajectoryPoint(positions=row.tolist())
            pt.time_from_start = duration_msg(k * chunk.dt_s)
            msg.points.append(pt)
        self._send_plan()
        self._pubs['chunk'].publish(msg)

    def _on_worker_fault(self, message: str) -> None:
        self._fault = message


def main(args=None) -> None:
    """Runs the node until SIGINT (Ctrl-C) or SIGTERM (`docker stop`, a launch shutting
    down). Either one ends in order while ROS still runs: an active node is deactivated (the
    arm brought to rest), then shut down; the exit status is 0."""
    # rclpy's own handler would shut the context down at once, and the stop could no
    # longer be published: take the signals here instead.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    received = []

    def on_signal(signum, _frame) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    node = VlaPolicyNode()
    executor = make_executor()
    executor.add_node(node)
    if node.p('autostart'):
        if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            node.trigger_activate()
    try:
        spin_until(stop, executor, node)
        if received:
            node.get_logger().info(f'{received[0]}: shutting down')
        if node._active:
            node.trigger_deactivate()
        node.trigger_shutdown()
    except ExternalShutdownException:
        pass
    finally:
        # The executor's threads end before the node's entities go, so no callback runs on
        # a destroyed handle.
        executor.shutdown(timeout_sec=2.0)
        executor.remove_node(node)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == '__main__':
    main()
