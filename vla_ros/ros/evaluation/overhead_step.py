"""The control side of `vla-ros bench PKG`'s overhead figure: one safety-filter step and the
command message built and serialized as the node publishes it (Float64MultiArray to a
position controller), for a package's action space. Without rclpy installed the message
step is the payload list only (said in the report)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vla_ros.adapters.safety import SafetyConfig, SafetyFilter
from vla_ros.runtime.bench.overhead import bench_overhead
from vla_ros.runtime.package.loader import read_manifest


def package_overhead(package_dir: str, cameras: int = 3, runs: int = 100) -> dict:
    """`overhead_ms` and its stages for `vla-ros bench PKG` (runtime/bench/overhead.py)."""
    step, publish = control_step(read_manifest(package_dir).action.dim)
    return {**bench_overhead(package_dir, step, cameras=cameras, runs=runs),
            'overhead_publish': publish}


def control_step(action_dim: int, dt_s: float = 0.01) -> tuple[Callable[[np.ndarray], object],
                                                                 str]:
    """(step(target) -> serialized command, what 'publish' covers)."""
    n = action_dim
    safety = SafetyFilter(-np.full(n, np.pi), np.full(n, np.pi), np.full(n, 2.0),
                          np.full(n, 20.0), SafetyConfig(0.05, 1.0, 1.0))
    safety.engage(np.zeros(n))
    measured = np.zeros(n)
    try:
        from rclpy.serialization import serialize_message
        from std_msgs.msg import Float64MultiArray
    except ImportError:
        return (lambda target: safety.step(target, measured, dt_s).positions.tolist(),
                'command payload list (rclpy not installed)')

    def step(target: np.ndarray) -> bytes:
        cmd = safety.step(np.asarray(target, float)[:n], measured, dt_s)
        return serialize_message(Float64MultiArray(data=cmd.positions.tolist()))

    return step, 'Float64MultiArray built and serialized (rclpy)'
