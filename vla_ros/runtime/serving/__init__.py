"""Serving a policy beside a control loop.

Owns the Policy in a child process (policy_process.py) and the inference worker thread that
turns observations into chunks in the action queue (worker.py). Imports policy/, chunking/,
package/ and backends/; never ROS: the node hands it callables.
"""
