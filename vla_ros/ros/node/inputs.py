"""The vla_policy node's inputs: subscriptions, their callbacks, and the worker's snapshot.

Threads: the callbacks run on the executor and only store (InputSlots, flags) or latch the
e-stop under `_safety_lock`; `_observe` runs on the worker thread and reads a consistent
snapshot. Mixed into VlaPolicyNode (policy_node.py), whose state it uses: slots, adapter,
safety, queue, parameters. rclpy lives here and in the other ros/ modules only.
"""

from __future__ import annotations

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, Float64, String

from vla_ros.ros.node.guard import guarded
from vla_ros.runtime.policy.policy import Observation


class InputsMixin:
    """Subscriptions and their callbacks (executor), the snapshot for the worker."""

    def _create_inputs(self, robot) -> None:
        """Camera, joint-state, instruction, e-stop and robot-state subscriptions
        (on_configure). Callbacks only store into InputSlots or flip a flag."""
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
        # The instruction is state, often latched (TRANSIENT_LOCAL, as the sim publishes it):
        # a transient-local reader gets the last one sent before this node started; the
        # volatile reader takes publishers that offer no history (a transient-local reader
        # is incompatible with them, and says so only through the ignored QoS event).
        # The same text arriving twice is dropped in the callback.
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        for qos, events in ((reliable, None), (latched, SubscriptionEventCallbacks(
                incompatible_qos=lambda _event: None))):
            self._subs.append(self.create_subscription(
                String, '~/instruction', self._on_instruction, qos, event_callbacks=events))
        # E-stop: reliable and deep enough that a burst never drops the stop; its own
        # callback group, so it never waits behind the node's default group (services,
        # parameter requests) on the executor.
        self._subs.append(self.create_subscription(
            Bool, '~/estop', self._on_estop, QoSProfile(depth=10),
            callback_group=MutuallyExclusiveCallbackGroup()))
        if robot.speed_scaling_topic:
            self._subs.append(self.create_subscription(
                Float64, robot.speed_scaling_topic, self._on_speed_scaling, sensor_qos))
        if robot.program_running_topic:
            self._subs.append(self.create_subscription(
                Bool, robot.program_running_topic, self._on_program_running, reliable))

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
        if msg.data == self.slots.instruction:
            return
        # The topic and the parameter are one instruction (`ros2 param get` shows the one in
        # use); the parameter path checks it like any other request.
        result = self.set_parameters([Parameter('instruction', value=msg.data)])[0]
        if result.successful:
            self.get_logger().info(f'instruction: "{msg.data}"')
        else:
            self._log_every('instruction', 2.0, 'error', f'instruction rejected: '
                            f'{result.reason}')

    @guarded('e-stop callback')
    def _on_estop(self, msg: Bool) -> None:
        if msg.data:
            self._to_filter('estop', 'e-stop topic')
            self.queue.clear()
            self._send_plan()
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
