"""`sim_cameras`: camera topics for tests and benchmarks when no renderer is wanted.

Publishes sensor_msgs/Image (rgb8) frames at a fixed rate on
/camera/<name>/image_raw, stamped at publication. Frames are seeded noise with a moving bar,
so consecutive frames differ like a live camera's.
"""

from __future__ import annotations

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import Image

from vla_ros.ros.conversions import numpy_to_image


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
        self.pubs = {n: self.create_publisher(Image, f'/camera/{n}/image_raw', 10)
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


def main(args=None) -> None:
    rclpy.init(args=args)
    node = SimCamerasNode()
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
