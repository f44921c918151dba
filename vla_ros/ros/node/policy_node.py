"""The `vla_policy` lifecycle node: cameras and joint states in, safe commands out.

Threads and what they own:
  executor callbacks  subscriptions store into InputSlots; services, parameters, status and
                      trajectory updates.
  control thread      the control loop at control_rate_hz: owns the SafetyFilter through
                      `_safety_lock` (which services and parameter callbacks also take) and
                      publishes the streamed commands. A thread sleeping to absolute tick
                      times, not an executor timer: measured on 2 cores, an rclpy timer at
                      100 Hz in a MultiThreadedExecutor busy with two camera streams ran at
                      about half rate (period error p50 9.5 ms), inference in or out of process.
  worker thread       talks to the Policy (in a child process by default); reads InputSlots,
                      writes the ActionQueue.
  loader thread       (hot-swap only) loads and warms a new package, hands it to the worker.
This file holds the lifecycle, the ROS entities and the engage/reset services; the rest of
the node is mixed in from its own modules beside it: inputs.py (subscriptions, callbacks, the
worker's snapshot), control.py (control thread, trajectory updates), swap.py (model loading
and hot-swap), reconfigure.py (parameter changes), status.py (~/status, /diagnostics),
guard.py (the callback guard).
Transitions: configure loads and validates everything and warms up (FAILURE with the reason
on any error); activate starts the worker and the timers; deactivate stops them and holds;
cleanup releases everything. Faults never raise out of a callback: they end in a hold, a
diagnostic and a log line.
"""

from __future__ import annotations

import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from vla_ros.adapters.safety import SafetyConfig, SafetyFilter
from vla_ros.ros.conversions import s_to_stamp
from vla_ros.ros.node.control import ControlMixin
from vla_ros.ros.node.guard import duration_msg, guarded
from vla_ros.ros.node.inputs import InputsMixin
from vla_ros.ros.node.params import PARAMS
from vla_ros.ros.node.reconfigure import ReconfigureMixin
from vla_ros.ros.node.slots import InputSlots
from vla_ros.ros.node.status import StatusMixin
from vla_ros.ros.node.swap import LOAD_ERRORS, SwapMixin
from vla_ros.runtime.chunking.action_queue import ActionQueue
from vla_ros.runtime.chunking.merge import make_strategy
from vla_ros.runtime.chunking.scheduling import RequestPolicy
from vla_ros.runtime.serving.worker import InferenceWorker


class VlaPolicyNode(InputsMixin, ControlMixin, SwapMixin, ReconfigureMixin, StatusMixin,
                    LifecycleNode):
    """Lifecycle and wiring; the parts live beside this file (see the module docstring)."""

    def __init__(self, **kwargs) -> None:
        super().__init__('vla_policy', **kwargs)
        for p in PARAMS:
            self.declare_parameter(p.name, p.default, ParameterDescriptor(
                description=p.description, read_only=False,
                additional_constraints=(f'one of {list(p.choices)}' if p.choices else
                                        f'range {p.range}' if p.range else '')))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._safety_lock = threading.Lock()
        self._reset_state()

    def _reset_state(self) -> None:
        self.manifest = self.policy = self.adapter = self.queue = self.safety = None
        self.model_path = ''
        self.worker: InferenceWorker | None = None
        self.slots: InputSlots | None = None
        self._subs, self._srvs, self._timers, self._pubs = [], [], [], {}
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
        self._ticks = []  # control tick times (monotonic), bounded below
        self._missed_ticks = 0
        self._seen_chunks = 0
        self.e2e_ms: list[float] = []  # observation stamp -> first command using its chunk
        self._last_cmd = None

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
        if not path:
            self.get_logger().error('configure: model_path is empty; set it to a model package')
            return TransitionCallbackReturn.FAILURE
        t0 = time.monotonic()
        try:
            self.manifest, self.adapter, self.policy = self._build_policy(path)
            self.model_path = path
            robot = self.adapter.robot
            safety_cfg = SafetyConfig(self.p('position_margin'), self.p('speed_scale'),
                                      self.p('acceleration_scale'))
            self.safety = SafetyFilter(self.adapter.lower, self.adapter.upper,
                                       self.adapter.velocity, self.adapter.acceleration,
                                       safety_cfg, self.adapter.commanded)
        except LOAD_ERRORS as e:
            self.get_logger().error(f'configure failed: {type(e).__name__}: {e}')
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
            rtc_prefix=self.p('merge_strategy') == 'rtc_inpaint',
            added_latency_s=self.p('added_latency_ms') / 1000.0)
        self.get_logger().info(
            f'configured {m.name} ({m.family}/{m.head.type}) for {robot.name} via '
            f'{self.adapter.controller.mode} on {self._command_topic()} in '
            f'{time.monotonic() - t0:.1f} s; {self.policy.describe()}')
        return TransitionCallbackReturn.SUCCESS

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
        """Starts the worker and the timers. SUCCESS -> active."""
        super().on_activate(state)
        if self.adapter.controller.mode == 'trajectory':
            self._timers.append(self.create_timer(1.0 / self.p('trajectory_rate_hz'),
                                                  self._on_trajectory,
                                                  MutuallyExclusiveCallbackGroup()))
        self._control_stop.clear()
        self._control_thread = threading.Thread(target=self._control_loop,
                                                name='vla_control', daemon=False)
        self._control_thread.start()
        self._timers.append(self.create_timer(0.5, self._on_status,
                                              MutuallyExclusiveCallbackGroup()))
        self.worker.start()
        if self.p('engage_on_activate'):
            ok, msg = self._engage()
            self._log_every('engage', 0.0, 'info' if ok else 'warn', f'engage: {msg}')
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stops the worker (joined with a timeout), holds, clears the queue. -> inactive."""
        for t in self._timers:
            self.destroy_timer(t)
        self._timers = []
        self._stop_control()
        if self.worker and not self.worker.stop(timeout_s=10.0):
            self.get_logger().error('inference worker did not stop within 10 s')
        with self._safety_lock:
            self.safety.disengage()
        self.queue.clear()
        super().on_deactivate(state)
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroys the ROS entities and releases the model. -> unconfigured."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        for t in self._timers:
            self.destroy_timer(t)
        self._stop_control()
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
        self._pubs['chunk'].publish(msg)

    def _on_worker_fault(self, message: str) -> None:
        self._fault = message

    # --- services ----------------------------------------------------------------------------

    def _engage(self) -> tuple[bool, str]:
        # Engaging needs the current pose (motion starts from it); missing camera images
        # only make the filter hold until they arrive.
        joints = self.slots.joints()
        if joints is None:
            return False, 'cannot engage: no joint_states yet'
        age = self.now_s() - joints.received_s
        if age * 1000.0 > self.p('max_staleness_ms'):
            return False, f'cannot engage: joint_states are {age * 1000:.0f} ms old'
        measured = self.adapter.joint_positions(joints.names, joints.positions)
        with self._safety_lock:
            try:
                self.safety.engage(measured)
            except RuntimeError as e:
                return False, str(e)
        return True, 'engaged: moving from the current pose'

    @guarded('engage service')
    def _on_engage(self, request: SetBool.Request, response: SetBool.Response):
        if self.safety is None:
            response.success, response.message = False, 'not configured'
            return response
        if request.data:
            response.success, response.message = self._engage()
        else:
            with self._safety_lock:
                self.safety.disengage()
            response.success, response.message = True, 'disengaged: holding'
        self.get_logger().info(f'~/engage {request.data}: {response.message}')
        return response

    @guarded('reset service')
    def _on_reset(self, request: Trigger.Request, response: Trigger.Response):
        if self.safety is None:
            response.success, response.message = False, 'not configured'
            return response
        with self._safety_lock:
            self.safety.reset()
        self.queue.clear()
        self._fault = ''
        self._callback_fault_at = -1e9
        response.success, response.message = True, 'reset: e-stop cleared; engage to move'
        self.get_logger().info(response.message)
        return response


def main(args=None) -> None:
    rclpy.init(args=args)
    node = VlaPolicyNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    if node.p('autostart'):
        if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            node.trigger_activate()
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node.worker is not None:
            node.worker.stop(timeout_s=10.0)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == '__main__':
    main()
