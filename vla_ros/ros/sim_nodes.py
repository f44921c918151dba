"""Simulated peers of the vla_policy node, speaking the real interfaces:

- `sim_robot`: a SimArm (vla_ros/sim/arm.py) behind the robot's real controller topic and
  message type, publishing joint_states like joint_state_broadcaster (gripper joints
  included). Grippers with a driver action (xArm, Franka Hand, Robotiq on UR) get a real
  control_msgs/GripperCommand action server at the driver's name (vla_ros/ros/sim_gripper.py)
  moving a SimGripper (`gripper_stroke_s` for a full stroke); AgiBot's gripper joints are arm
  joints on /joint_command. The policy node cannot tell it from the driver.
  With `scene:=tabletop` it also runs a tabletop task (`task`: touch, the kinematic scene of
  vla_ros/sim/scene.py, or pick / pick_place, the physics scene of vla_ros/sim/pick_scene.py,
  stepped with the arm; vla_ros/ros/sim_scene.py): scene and wrist cameras (sensor_msgs/Image
  rgb8 on camera/<name>/image_raw) rendered from the world as it is, `~/new_episode`
  (std_srvs/Trigger: home pose, gripper open, new layout, the instruction published on
  `instruction_topic`; the response message is the episode as JSON) and `~/episode_status`
  (std_msgs/String JSON: seed, task, instruction, elapsed, touching, success; the physics
  tasks add held, lifted, placed, closure) at 10 Hz. `view_rate_hz` > 0 adds
  camera/view/image_raw, a larger third-person view for people (physics tasks).
- `sim_cameras`: sensor_msgs/Image (rgb8) frames on camera/<name>/image_raw at a fixed rate,
  stamped at publication; seeded noise with a moving bar, so consecutive frames differ.

Topic names are relative, so a namespace moves every one of them.
Run as console scripts, or `python -m vla_ros.ros.sim_nodes robot|cameras --ros-args ...`.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

import numpy as np
import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64, Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from vla_ros.adapters.robots import robot_spec
from vla_ros.ros.conversions import numpy_to_image
from vla_ros.ros.sim_gripper import SimGripperServer
from vla_ros.sim.arm import SimArm
from vla_ros.sim.gripper import SimGripper


def duration_to_s(d) -> float:
    return d.sec + d.nanosec * 1e-9


class SimRobotNode(Node):
    def __init__(self, robot: str = 'xarm6', controller: str = '', rate_hz: float = 100.0,
                 initial: list[float] | None = None, **kwargs) -> None:
        super().__init__('sim_robot', **kwargs)
        self.declare_parameter('robot', robot)
        self.declare_parameter('controller', controller)
        self.declare_parameter('joint_states_rate_hz', rate_hz)
        self.declare_parameter('scene', '')
        self.declare_parameter('task', 'touch')
        self.declare_parameter('view_rate_hz', 0.0)
        self.declare_parameter('view_width', 480)
        self.declare_parameter('view_height', 360)
        self.declare_parameter('camera_rate_hz', 30.0)
        self.declare_parameter('image_width', 96)
        self.declare_parameter('image_height', 96)
        self.declare_parameter('episode_seed', 0)
        self.declare_parameter('instruction_topic', 'vla_policy/instruction')
        self.declare_parameter('gripper_stroke_s', 0.5)
        spec = robot_spec(self.get_parameter('robot').value)
        name = self.get_parameter('controller').value or spec.default_controller
        self.controller = spec.controllers[name]
        self.arm = SimArm(spec, np.array(initial) if initial else None)
        stroke_s = float(self.get_parameter('gripper_stroke_s').value)
        # Grippers behind a driver action; the others are arm joints (AgiBot).
        self.grippers = {g.action_name: SimGripper(g, stroke_s) for g in spec.grippers
                         if g.action_server and g.joint not in self.arm.names}
        self.gripper_servers = {
            name: SimGripperServer(self, sim, sim.gripper.action_server)
            for name, sim in self.grippers.items()}
        self.errors = 0
        mode = self.controller.mode
        qos = QoSProfile(depth=10)
        if mode == 'position_stream':
            self.create_subscription(Float64MultiArray, self.controller.topic, self._on_stream,
                                     qos)
        elif mode == 'joint_state':
            self.create_subscription(JointState, self.controller.topic, self._on_named, qos)
        else:
            self.create_subscription(JointTrajectory, self.controller.topic, self._on_traj, qos)
        self.pub = self.create_publisher(JointState, 'joint_states', qos)
        self._last = time.monotonic()
        period = 1.0 / self.get_parameter('joint_states_rate_hz').value
        self.create_timer(period, self._on_tick)
        self._setup_ur_status(spec)
        self.scene = None
        if self.get_parameter('scene').value:
            self._setup_scene(spec)

    # --- UR: speed scaling and program state -------------------------------------------------

    def _setup_ur_status(self, spec) -> None:
        """Where the robot has them (UR): the speed scaling the scaled trajectory controller
        runs at (Float64 in [0, 1], every tick, as speed_scaling_state_broadcaster) and
        whether the robot program runs (Bool, latched, as io_and_status_controller). Both are
        parameters (`speed_scaling`, `program_running`: the pendant's slider and play/stop):
        with the program stopped, commands are ignored and the arm holds."""
        self.declare_parameter('speed_scaling', 1.0)
        self.declare_parameter('program_running', True)
        scaling = float(self.get_parameter('speed_scaling').value)
        if not 0.0 <= scaling <= 1.0:
            raise ValueError(f'speed_scaling {scaling} must be in [0, 1]')
        self.arm.speed_scaling = scaling
        self.program_running = bool(self.get_parameter('program_running').value)
        self.scaling_pub = self.program_pub = None
        if spec.speed_scaling_topic:
            self.scaling_pub = self.create_publisher(Float64, spec.speed_scaling_topic, 10)
        if spec.program_running_topic:
            latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self.program_pub = self.create_publisher(Bool, spec.program_running_topic, latched)
            self.program_pub.publish(Bool(data=self.program_running))
        self.add_on_set_parameters_callback(self._on_ur_params)

    def _on_ur_params(self, params) -> SetParametersResult:
        for p in params:
            if p.name == 'speed_scaling':
                if not 0.0 <= float(p.value) <= 1.0:
                    return SetParametersResult(successful=False,
                                               reason='speed_scaling must be in [0, 1]')
                self.arm.speed_scaling = float(p.value)
            elif p.name == 'program_running':
                self.program_running = bool(p.value)
                if not self.program_running:
                    self.arm.hold()  # controller_stopper: the motion controllers stop
                if self.program_pub is not None:
                    self.program_pub.publish(Bool(data=self.program_running))
        return SetParametersResult(successful=True)

    # --- tabletop scene ----------------------------------------------------------------------

    def _setup_scene(self, spec) -> None:
        from vla_ros.ros.sim_scene import SceneDriver

        kind = self.get_parameter('scene').value
        if kind != 'tabletop':
            raise ValueError(f'unknown scene {kind!r}; the scenes are: tabletop')
        size = (self.get_parameter('image_width').value,
                self.get_parameter('image_height').value)
        self.scene = SceneDriver(spec, self.get_parameter('task').value, size,
                                 float(self.get_parameter('gripper_stroke_s').value))
        self._scene_lock = threading.Lock()
        self._seed = int(self.get_parameter('episode_seed').value)
        self._episode_t0 = time.monotonic()
        self._first_success: float | None = None
        self._status_n = 0
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.instruction_pub = self.create_publisher(
            String, self.get_parameter('instruction_topic').value, latched)
        self.cam_pubs = {c: self.create_publisher(Image, f'camera/{c}/image_raw', 10)
                         for c in ('scene', 'wrist')}
        self.status_pub = self.create_publisher(String, '~/episode_status', 10)
        self.create_service(Trigger, '~/new_episode', self._on_new_episode)
        self.create_timer(1.0 / self.get_parameter('camera_rate_hz').value, self._on_camera)
        self.create_timer(0.1, self._on_status)
        view_hz = float(self.get_parameter('view_rate_hz').value)
        if view_hz > 0:  # a third-person view for people (GIFs), not a model camera
            self.view_pub = self.create_publisher(Image, 'camera/view/image_raw', 2)
            self.create_timer(1.0 / view_hz, self._on_view)
        self._new_episode(self._seed)

    def _new_episode(self, seed: int) -> dict:
        with self._scene_lock:
            ep = self.scene.reset(seed)
            self.arm.reset(self.scene.home(self.arm.state()[0]))
            for sim in self.grippers.values():
                sim.command(sim.gripper.joint_open)
                sim.position, sim.object_at = sim.gripper.joint_open, None
            self._episode_t0 = time.monotonic()
            self._first_success = None
        self.instruction_pub.publish(String(data=ep['instruction']))
        self.get_logger().info(f'episode {seed}: "{ep["instruction"]}"')
        return ep

    def _on_new_episode(self, request: Trigger.Request, response: Trigger.Response):
        self._seed += 1
        try:
            response.message = json.dumps(self._new_episode(self._seed))
            response.success = True
        except Exception as e:
            response.success, response.message = False, f'{type(e).__name__}: {e}'
        return response

    def _on_camera(self) -> None:
        q, _ = self.arm.state()
        with self._scene_lock:
            images = self.scene.render(q)
        stamp = self.get_clock().now().to_msg()
        for name, img in images.items():
            msg = Image()
            numpy_to_image(img, 'rgb8', msg)
            msg.header.stamp = stamp
            msg.header.frame_id = f'{name}_camera'
            self.cam_pubs[name].publish(msg)

    def _on_view(self) -> None:
        size = (self.get_parameter('view_width').value, self.get_parameter('view_height').value)
        with self._scene_lock:
            img = self.scene.view(size)
        if img is None:
            return
        msg = Image()
        numpy_to_image(img, 'rgb8', msg)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = 'view_camera'
        self.view_pub.publish(msg)

    def _on_status(self) -> None:
        q, _ = self.arm.state()
        with self._scene_lock:
            ep = self.scene.episode
            st = self.scene.status(q)
            elapsed = time.monotonic() - self._episode_t0
            if st['success'] and self._first_success is None:
                self._first_success = elapsed
            self._status_n += 1
        if self._status_n % 10 == 0:  # re-announce the task for late subscribers
            self.instruction_pub.publish(String(data=ep.instruction))
        self.status_pub.publish(String(data=json.dumps({
            'seed': ep.seed, 'task': self.scene.task, 'instruction': ep.instruction,
            'target': ep.target, 'elapsed_s': round(elapsed, 3), **st,
            'success': self._first_success is not None,
            'time_to_success_s': self._first_success})))

    def _on_stream(self, msg: Float64MultiArray) -> None:
        if not self.program_running:
            return
        try:
            self.arm.command_positions(msg.data)
        except ValueError as e:
            self.errors += 1
            self.get_logger().error(f'rejected command: {e}')

    def _on_named(self, msg: JointState) -> None:
        if self.program_running:
            self.arm.command_named(msg.name, msg.position)

    def _on_traj(self, msg: JointTrajectory) -> None:
        if not msg.points or not self.program_running:
            return
        times = [duration_to_s(p.time_from_start) for p in msg.points]
        self.arm.command_trajectory(time.monotonic(), msg.joint_names, times,
                                    [list(p.positions) for p in msg.points])

    def _on_tick(self) -> None:
        now = time.monotonic()
        dt = max(now - self._last, 1e-4)
        self.arm.step(now, dt)
        self._last = now
        g_names, g_pos, g_vel = [], [], []
        before = {name: sim.position for name, sim in self.grippers.items()}
        for sim in self.grippers.values():
            sim.step(dt)
        if self.scene is not None:
            with self._scene_lock:
                self.scene.step(self.arm, self.grippers, dt)
        for name, sim in self.grippers.items():
            self.gripper_servers[name].step(dt)
            g_names.append(sim.gripper.joint)
            g_pos.append(sim.position)
            g_vel.append((sim.position - before[name]) / dt)
        pos, vel = self.arm.state()
        msg = JointState(name=list(self.arm.names) + g_names, position=pos.tolist() + g_pos,
                         velocity=vel.tolist() + g_vel)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub.publish(msg)
        if self.scaling_pub is not None:
            self.scaling_pub.publish(Float64(data=self.arm.speed_scaling))



class SimCamerasNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__('sim_cameras', **kwargs)
        self.declare_parameter('camera_names', ['scene', 'wrist'])
        self.declare_parameter('rate_hz', 30.0)
        self.declare_parameter('width', 640)
        self.declare_parameter('height', 480)
        names = list(self.get_parameter('camera_names').value)
        w, h = self.get_parameter('width').value, self.get_parameter('height').value
        rng = np.random.default_rng(0)
        self.base = rng.integers(0, 200, (h, w, 3), dtype=np.uint8)
        self.pubs = {n: self.create_publisher(Image, f'camera/{n}/image_raw', 10)
                     for n in names}
        self.frame = 0
        self.create_timer(1.0 / self.get_parameter('rate_hz').value, self._on_timer)

    def _on_timer(self) -> None:
        img = self.base.copy()
        x = (self.frame * 8) % img.shape[1]
        img[:, x:x + 16] = 255
        self.frame += 1
        stamp = self.get_clock().now().to_msg()
        for pub in self.pubs.values():
            msg = Image()
            numpy_to_image(img, 'rgb8', msg)
            msg.header.stamp = stamp
            pub.publish(msg)



def _spin(node_class) -> None:
    """Spins until SIGINT or SIGTERM, then destroys the node while ROS still runs (rclpy's
    own handler would shut the context down first, and the teardown would raise)."""
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = node_class()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def main_robot() -> None:
    _spin(SimRobotNode)


def main_cameras() -> None:
    _spin(SimCamerasNode)


if __name__ == '__main__':
    which = sys.argv.pop(1) if len(sys.argv) > 1 else ''
    if which not in ('robot', 'cameras'):
        sys.exit('usage: python -m vla_ros.ros.sim_nodes robot|cameras [--ros-args ...]')
    (main_robot if which == 'robot' else main_cameras)()
