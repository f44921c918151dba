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
Transitions: configure loads and validates everything and warms up (FAILURE with the reason
on any error); activate starts the worker and the timers; deactivate stops them and holds;
cleanup releases everything. Faults never raise out of a callback: they end in a hold, a
diagnostic and a log line.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, Float64, Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from vla_ros.adapters.adapter import AdapterError, RobotAdapter
from vla_ros.adapters.robots import robot_spec
from vla_ros.adapters.safety import SafetyConfig, SafetyFilter
from vla_ros.ros.conversions import s_to_stamp
from vla_ros.ros.node.params import BY_NAME, PARAMS
from vla_ros.ros.node.slots import InputSlots
from vla_ros.runtime.backends import BackendError, load_backend
from vla_ros.runtime.chunking.action_queue import ActionQueue
from vla_ros.runtime.chunking.merge import make_strategy
from vla_ros.runtime.chunking.scheduling import RequestPolicy
from vla_ros.runtime.errors import PackageError
from vla_ros.runtime.package.loader import load_package, read_manifest
from vla_ros.runtime.policy.policy import Observation, Policy, PolicyConfig
from vla_ros.runtime.serving.policy_process import BackendSpec, PolicyProcess
from vla_ros.runtime.serving.worker import InferenceWorker

CALLBACK_FAULT_HOLD_S = 1.0  # how long a failed callback holds the robot
CONTROL_SWITCH_INTERVAL_S = 0.0005
LOAD_ERRORS = (PackageError, AdapterError, BackendError, ValueError, KeyError, OSError)


def guarded(name: str):
    """Last line of defence for executor callbacks. An exception escaping a callback ends
    the executor's spin, which would stop every callback, the control loop included. Here it
    is logged, kept as a fault (the control loop holds while it is set) and the callback
    returns; services answer success=False with the reason."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(self, *args):
            try:
                return fn(self, *args)
            except Exception as e:  # the handling is complete: hold, diagnose, log
                self._callback_fault = f'{name} failed: {type(e).__name__}: {e}'
                self._callback_fault_at = time.monotonic()
                self._callback_errors += 1
                self._log_every(f'guard-{name}', 2.0, 'error',
                                f'{self._callback_fault}; holding')
                if len(args) == 2 and hasattr(args[1], 'success'):  # a service response
                    args[1].success, args[1].message = False, self._callback_fault
                    return args[1]
                return None

        return inner

    return wrap


def _duration_s(seconds: float):
    from builtin_interfaces.msg import Duration

    ns = int(round(seconds * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class VlaPolicyNode(LifecycleNode):
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

    def _policy_config(self) -> PolicyConfig:
        layer = self.p('exit_layer')
        return PolicyConfig(mode=self.p('policy_mode'), threshold_set=self.p('threshold_set')
                            or None, exit_layer=layer if layer >= 0 else None)

    def _build_policy(self, path: str) -> tuple:
        """Loads, validates and warms up a package for this robot (any thread): in a child
        process by default, in this one with inference_process=False."""
        m = read_manifest(path)
        adapter = RobotAdapter(robot_spec(self.p('robot')), m.state.names, m.action.names,
                               self.p('controller') or None)
        self._check_cameras(m)
        config = self._policy_config()
        if config.mode == 'early_exit' and m.threshold_set(config.threshold_set) is None:
            config = replace(config, mode='full')
        kind = self.p('backend')
        if self.p('inference_process'):
            spec = BackendSpec(kind, self.p('device'), self.p('precision'),
                               self.p('threads') or None)
            return m, adapter, PolicyProcess(path, spec, config)
        pkg = load_package(path)
        # Spinning ORT threads would take the cores the control timer needs between graphs.
        options = ({'threads': self.p('threads') or None, 'spin': False}
                   if kind == 'onnxruntime' else {})
        backend = load_backend(pkg, kind, self.p('device'), self.p('precision'), **options)
        policy = Policy(pkg, backend, config)
        warm = self._warmup_observation(pkg.manifest)
        for _ in range(2):  # first calls allocate and tune; keep them off the robot's clock
            policy.infer(warm)
        return pkg.manifest, adapter, policy

    def _check_cameras(self, m) -> None:
        names, topics = list(self.p('camera_names')), list(self.p('camera_topics'))
        if len(names) != len(topics):
            raise ValueError(f'camera_names has {len(names)} entries but camera_topics '
                             f'{len(topics)}')
        slots = {c.name for c in m.cameras}
        unknown = [n for n in names if n not in slots]
        missing = [c.name for c in m.cameras if c.required and c.name not in names]
        if unknown or missing:
            raise ValueError(f'camera mapping does not fit the model: unknown slots {unknown}, '
                             f'required slots without a topic {missing}; the model has '
                             f'{sorted(slots)}')

    def _warmup_observation(self, m) -> Observation:
        images = {c.name: (np.zeros((c.height, c.width, 3), np.uint8), 'rgb8')
                  for c in m.cameras}
        return Observation(images, np.zeros(m.state.dim), 'warm up', 0.0)

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
        sensor_qos = (QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
                      if self.p('qos_reliable_sensors') else qos_profile_sensor_data)
        inputs = ReentrantCallbackGroup()
        for cam, topic in zip(self.p('camera_names'), self.p('camera_topics'), strict=True):
            compressed = topic.endswith('/compressed')
            self._subs.append(self.create_subscription(
                CompressedImage if compressed else Image, topic,
                lambda msg, c=cam, z=compressed: self._on_image(c, msg, z), sensor_qos,
                callback_group=inputs))
        self._subs.append(self.create_subscription(
            JointState, self.p('joint_states_topic'), self._on_joints, sensor_qos,
            callback_group=inputs))
        reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self._subs.append(self.create_subscription(String, '~/instruction',
                                                   self._on_instruction, reliable))
        # E-stop: reliable and deep enough that a burst never drops the stop.
        self._subs.append(self.create_subscription(Bool, '~/estop', self._on_estop,
                                                   QoSProfile(depth=10)))
        if robot.speed_scaling_topic:
            self._subs.append(self.create_subscription(
                Float64, robot.speed_scaling_topic, self._on_speed_scaling, sensor_qos))
        if robot.program_running_topic:
            self._subs.append(self.create_subscription(
                Bool, robot.program_running_topic, self._on_program_running, reliable))
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

    # --- inputs ------------------------------------------------------------------------------

    @guarded('camera callback')
    def _on_image(self, camera: str, msg, compressed: bool) -> None:
        if not self.slots.put_image(camera, msg, self.now_s(), compressed):
            self._log_every(f'img-{camera}', 2.0, 'error',
                            f'camera {camera}: unusable image ({self.slots.errors.last}); '
                            'holding until good images arrive')

    @guarded('joint_states callback')
    def _on_joints(self, msg: JointState) -> None:
        if not self.slots.put_joints(msg, self.now_s()):
            self._log_every('joints', 2.0, 'error', f'bad joint_states: {self.slots.errors.last}')

    @guarded('instruction callback')
    def _on_instruction(self, msg: String) -> None:
        if msg.data != self.slots.instruction:
            self.get_logger().info(f'instruction: "{msg.data}"')
        self.slots.instruction = msg.data

    @guarded('e-stop callback')
    def _on_estop(self, msg: Bool) -> None:
        if msg.data:
            with self._safety_lock:
                self.safety.estop('e-stop topic')
            self.queue.clear()
            self.get_logger().warn('E-STOP latched: holding until ~/reset and ~/engage')

    @guarded('speed scaling callback')
    def _on_speed_scaling(self, msg: Float64) -> None:
        self._external_scale = float(msg.data) if np.isfinite(msg.data) else 0.0

    @guarded('program state callback')
    def _on_program_running(self, msg: Bool) -> None:
        self._program_running = bool(msg.data)

    def _observe(self) -> Observation | None:
        """Worker thread: a consistent snapshot, or None (with a reason logged) if not ready."""
        now = self.now_s()
        stale = self.slots.staleness(now, self.p('max_staleness_ms') / 1000.0)
        if stale:
            self._log_every('observe', 2.0, 'warn', f'not inferring: {stale}')
            return None
        skew = self.slots.skew_s()
        if skew * 1000.0 > self.p('max_camera_skew_ms'):
            self._log_every('skew', 2.0, 'warn', f'not inferring: cameras {skew * 1000:.0f} ms '
                            'apart')
            return None
        if not self.slots.instruction:
            self._log_every('instr', 5.0, 'warn', 'not inferring: no instruction (publish on '
                            '~/instruction or set the instruction parameter)')
            return None
        frames = self.slots.frames()
        joints = self.slots.joints()
        try:
            state = self.adapter.state_vector(joints.names, joints.positions)
        except KeyError as e:
            self._log_every('state', 2.0, 'error', f'not inferring: {e}')
            return None
        stamps = [f.stamp_s for f in frames.values()]
        arrivals = [f.received_s for f in frames.values()]
        # Header stamps are capture times on the same clock as ours when within a second of
        # arrival; otherwise (a camera on another clock) arrival time is the safer choice.
        stamp = min(stamps) if all(abs(a - s) < 1.0 for a, s in zip(arrivals, stamps,
                                                                     strict=True)) \
            else min(arrivals)
        return Observation({c: (f.image, f.encoding) for c, f in frames.items()}, state,
                           self.slots.instruction, stamp)

    def _on_chunk(self, chunk, report) -> None:
        msg = JointTrajectory()
        s_to_stamp(chunk.stamp_s, msg.header.stamp)
        msg.joint_names = list(self.manifest.action.names)
        for k, row in enumerate(chunk.actions):
            pt = JointTrajectoryPoint(positions=row.tolist())
            pt.time_from_start = _duration_s(k * chunk.dt_s)
            msg.points.append(pt)
        self._pubs['chunk'].publish(msg)

    def _on_worker_fault(self, message: str) -> None:
        self._fault = message

    # --- control -----------------------------------------------------------------------------

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
            pt.time_from_start = _duration_s(0.1)
            msg.points.append(pt)
        else:
            times, pos, vel = safe
            for t, p, v in zip(times[1:], pos[1:], vel[1:], strict=True):
                pt = JointTrajectoryPoint(positions=p.tolist(), velocities=v.tolist())
                pt.time_from_start = _duration_s(float(t))
                msg.points.append(pt)
        self._pubs['command'].publish(msg)

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

    # --- parameters and hot-swap -------------------------------------------------------------

    def _on_set_parameters(self, params) -> SetParametersResult:
        active = self.worker is not None
        for param in params:
            spec = BY_NAME.get(param.name)
            if spec is None:
                continue
            reason = spec.check(param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            if active and not spec.dynamic:
                return SetParametersResult(successful=False, reason=(
                    f'{param.name} cannot change while configured; deactivate and clean up '
                    'first'))
        if not active:
            return SetParametersResult(successful=True)
        for param in params:
            reason = self._apply(param.name, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply(self, name: str, value) -> str:
        """Applies one dynamic parameter; '' or the reason it is rejected."""
        if name == 'model_path':
            return self._start_swap(value)
        if name == 'instruction':
            self.slots.instruction = value
        elif name in ('policy_mode', 'threshold_set', 'exit_layer'):
            current = self._policy_config()
            cfg = replace(current, **{'mode': value} if name == 'policy_mode' else
                          {'threshold_set': value or None} if name == 'threshold_set' else
                          {'exit_layer': value if value >= 0 else None})
            try:
                self._validate_policy_config(cfg)
            except (ValueError, KeyError) as e:
                return str(e)
            self.worker.reconfigure(cfg)
        elif name in ('merge_strategy', 'rtc_schedule'):
            strategy = value if name == 'merge_strategy' else self.p('merge_strategy')
            schedule = value if name == 'rtc_schedule' else self.p('rtc_schedule')
            self.queue.set_strategy(make_strategy(strategy, schedule=schedule)
                                    if strategy == 'rtc_blend' else make_strategy(strategy))
            self.worker.rtc_prefix = strategy == 'rtc_inpaint'
        elif name == 'latency_compensation':
            self.queue.latency_compensation = bool(value)
        elif name == 'request_fraction':
            self.worker.request = RequestPolicy('horizon_fraction', value)
        elif name == 'deadline_ms':
            self.worker.deadline_ms = value or None
        elif name == 'added_latency_ms':
            self.worker.added_latency_s = value / 1000.0
        elif name in ('speed_scale', 'acceleration_scale'):
            with self._safety_lock:
                c = self.safety.config
                self.safety.config = replace(c, **{name: value})
        return ''

    def _validate_policy_config(self, cfg: PolicyConfig) -> None:
        m = self.manifest
        if cfg.mode == 'early_exit' and cfg.threshold_set:
            m.threshold_set(cfg.threshold_set)
        if cfg.mode == 'fixed' and cfg.exit_layer not in self.policy.exits:
            raise ValueError(f'exit_layer must be one of {list(self.policy.exits)} for fixed '
                             'mode')

    def _start_swap(self, path: str) -> str:
        if self._swap['state'] == 'loading':
            return 'a model swap is already in progress'
        if not Path(path).is_dir():
            return f'{path} is not a directory'
        try:  # fast, synchronous checks: the answer goes back in the SetParameters result
            m = read_manifest(path)
            RobotAdapter(robot_spec(self.p('robot')), m.state.names, m.action.names,
                         self.p('controller') or None)
            self._check_cameras(m)
            if m.action.names != self.manifest.action.names:
                raise ValueError(f'its actions {list(m.action.names)} differ from the running '
                                 f'model\'s {list(self.manifest.action.names)}')
        except (PackageError, AdapterError, ValueError, KeyError) as e:
            self.get_logger().error(f'model swap to {path} rejected: {e}')
            return f'rejected: {e}'
        self._swap = {'state': 'loading', 'detail': path, 'started': time.monotonic(),
                      'missed': 0}
        threading.Thread(target=self._load_for_swap, args=(path,), name='vla_model_loader',
                         daemon=True).start()
        self.get_logger().info(f'loading {m.name} from {path} in the background; the current '
                               'model keeps serving')
        return ''

    def _load_for_swap(self, path: str) -> None:
        try:
            manifest, _adapter, policy = self._build_policy(path)
        except LOAD_ERRORS as e:
            self._swap.update(state='failed', detail=f'{path}: {e}')
            self.get_logger().error(f'model swap to {path} failed while loading; '
                                    f'{self.manifest.name} keeps serving: {e}')
            return

        def swapped(old_policy) -> None:
            self.manifest, self.policy, self.model_path = manifest, policy, path
            took = time.monotonic() - self._swap['started']
            self._swap.update(state='swapped', detail=f'{manifest.name} after {took:.1f} s, '
                              f'{self._swap["missed"]} control ticks missed')
            self.get_logger().info(f'model swapped to {manifest.name} ({path}); '
                                   f'{self._swap["missed"]} control ticks missed')
            old_policy.close()

        self.worker.swap(policy, swapped)

    # --- status ------------------------------------------------------------------------------

    @guarded('status')
    def _on_status(self) -> None:
        if self.worker is None:
            return
        w = self.worker
        lat = np.array(w.latencies_ms) if w.latencies_ms else np.array([np.nan])
        periods = np.diff(self._ticks[-200:]) if len(self._ticks) > 2 else np.array([np.nan])
        cmd = self._last_cmd
        safety_state = cmd.state if cmd else self.safety.state
        values = {
            'model': w.stats.model_name, 'inference_hz': f'{w.inference_hz():.2f}',
            'latency_p50_ms': f'{np.nanpercentile(lat, 50):.1f}',
            'latency_p99_ms': f'{np.nanpercentile(lat, 99):.1f}',
            'exit_layer': str(w.stats.last_exit_layer),
            'queue_remaining_s': f'{self.queue.remaining_s(self.now_s()):.3f}',
            'merge_strategy': self.queue.strategy.describe(),
            'safety_state': safety_state, 'hold_reason': cmd.reason if cmd else '',
            'inference_failures': str(w.stats.failures), 'last_error': w.stats.last_error,
            'input_errors': str(self.slots.errors.count),
            'control_period_p99_ms': f'{np.nanpercentile(periods, 99) * 1000:.2f}',
            'missed_control_ticks': str(self._missed_ticks),
            'model_swap': f'{self._swap["state"]} {self._swap["detail"]}'.strip(),
        }
        holding = safety_state in ('holding', 'estop')
        level = (DiagnosticStatus.ERROR if safety_state == 'estop' or w.stats.failures and
                 w.stats.last_error == self._fault else
                 DiagnosticStatus.WARN if holding or self._swap['state'] == 'failed' else
                 DiagnosticStatus.OK)
        message = (f'{safety_state}: {cmd.reason}' if cmd and cmd.reason else safety_state)
        status = DiagnosticStatus(level=level, name='vla_policy: policy', message=message,
                                  hardware_id=self.adapter.robot.name,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        self._pubs['status'].publish(status)
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self._pubs['diagnostics'].publish(arr)


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
