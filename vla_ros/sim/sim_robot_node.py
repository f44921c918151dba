"""`sim_robot`: a SimArm behind the robot's real controller topic and message type, publishing
/joint_states like joint_state_broadcaster. The policy node cannot tell it from the driver.
"""

from __future__ import annotations

import time

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from vla_ros.adapters.robots import robot_spec
from vla_ros.sim.arm import SimArm


def duration_to_s(d) -> float:
    return d.sec + d.nanosec * 1e-9


class SimRobotNode(Node):
    def __init__(self, robot: str = 'xarm6', controller: str = '', rate_hz: float = 100.0,
                 initial: list[float] | None = None, **kwargs) -> None:
        super().__init__('sim_robot', **kwargs)
        self.declare_parameter('robot', robot)
        self.declare_parameter('controller', controller)
        self.declare_parameter('joint_states_rate_hz', rate_hz)
        spec = robot_spec(self.get_parameter('robot').value)
        name = self.get_parameter('controller').value or spec.default_controller
        self.controller = spec.controllers[name]
        self.arm = SimArm(spec, np.array(initial) if initial else None)
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
        self.pub = self.create_publisher(JointState, '/joint_states', qos)
        self._last = time.monotonic()
        period = 1.0 / self.get_parameter('joint_states_rate_hz').value
        self.create_timer(period, self._on_tick)

    def _on_stream(self, msg: Float64MultiArray) -> None:
        try:
            self.arm.command_positions(msg.data)
        except ValueError as e:
            self.errors += 1
            self.get_logger().error(f'rejected command: {e}')

    def _on_named(self, msg: JointState) -> None:
        self.arm.command_named(msg.name, msg.position)

    def _on_traj(self, msg: JointTrajectory) -> None:
        if not msg.points:
            return
        times = [duration_to_s(p.time_from_start) for p in msg.points]
        self.arm.command_trajectory(time.monotonic(), msg.joint_names, times,
                                    [list(p.positions) for p in msg.points])

    def _on_tick(self) -> None:
        now = time.monotonic()
        self.arm.step(now, max(now - self._last, 1e-4))
        self._last = now
        pos, vel = self.arm.state()
        g_names, g_pos = self.arm.gripper_state()
        msg = JointState(name=list(self.arm.names) + g_names, position=pos.tolist() + g_pos,
                         velocity=vel.tolist() + [0.0] * len(g_pos))
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub.publish(msg)


def main(args=None) -> None:
    rclpy.init(args=args)
    node = SimRobotNode()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == '__main__':
    main()
