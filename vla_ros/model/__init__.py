"""Offline, torch: the VLA families with exit points, action heads, training losses.

Imports torch and transformers; from the project only model/ and the shared numpy/torch flow
integrator (runtime.policy.flow). Never ROS, never export/.
"""
