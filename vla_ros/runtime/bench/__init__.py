"""Benchmarks of the runtime without ROS (`vla-ros bench PKG`, `vla-ros bench queue`).

package_bench.py measures a package per backend and mode (the torch reference is handed in
by the caller, never imported here), with the truncated flow head and the deadline bound
(policy_costs.py) and GFLOP/s against the matmul ceiling (flops.py); queue_bench.py runs
chunk execution in closed loop. The node under load is measured by
vla_ros.ros.evaluation.node_bench.
"""
