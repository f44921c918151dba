"""Simulated arms, the tabletop scene and tasks, the scripted expert, default-model
training. No rclpy: the ROS wrappers are vla_ros/ros/sim_nodes.py.
"""
