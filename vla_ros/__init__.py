"""vla_ros: real-time serving of Vision-Language-Action policies on ROS 2."""

__version__ = '0.1.0'
