"""The ROS 2 layer, the only place that imports rclpy.

  node/        the vla_policy lifecycle node and its parameters
  evaluation/  episodes, `vla-ros eval`, `vla-ros demo` and `vla-ros bench node`
  conversions.py  messages <-> numpy; launch_logic.py  what the launch files decide;
  sim_nodes.py    the simulated robot and cameras behind the real topics
"""
