"""`vla-ros bench node PKG`: the node under load, as deployed.

The sim robot and the cameras run as separate processes (as a driver and camera drivers
would); the vla_policy node runs here, engaged, with inference running continuously. Measured:
control-tick period error at control_rate_hz, end-to-end latency from an image's stamp to the
first command that uses the chunk inferred from it, inference rate and latency, and, with
--swap-to, the control ticks missed while a second package loads and swaps in.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def _pct(values) -> dict[str, float]:
    a = np.asarray(values, float)
    if a.size == 0:
        return {}
    return {'p50': float(np.percentile(a, 50)), 'p99': float(np.percentile(a, 99)),
            'max': float(a.max()), 'n': int(a.size)}


@contextmanager
def policy_with_peers(package: str, robot: str = 'xarm6', controller: str = '',
                      control_rate_hz: float = 100.0, instruction: str = '',
                      params: dict | None = None, scene: str = '',
                      peer_params: dict | None = None):
    """Yields (node, manifest): the vla_policy node configured, activated and receiving, in
    this process, with the sim robot (and the sim cameras, or the robot's scene cameras) as
    separate processes on a private ROS domain; everything is torn down on exit."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from vla_ros.ros.node.policy_node import VlaPolicyNode
    from vla_ros.runtime.package.loader import read_manifest

    m = read_manifest(package)
    cams = [c.name for c in m.cameras]
    env = dict(os.environ)
    env['ROS_DOMAIN_ID'] = str(random.randint(100, 200))  # stay off other graphs
    profile = Path(__file__).resolve().parents[2] / 'config' / 'fastdds_shm.xml'
    if profile.is_file():
        env['FASTRTPS_DEFAULT_PROFILES_FILE'] = str(profile)
    os.environ.update({k: env[k] for k in ('ROS_DOMAIN_ID', 'FASTRTPS_DEFAULT_PROFILES_FILE')
                       if k in env})
    robot_args = ['-p', f'robot:={robot}'] + (['-p', f'controller:={controller}']
                                              if controller else [])
    if scene:
        robot_args += ['-p', f'scene:={scene}']
    for k, v in (peer_params or {}).items():
        robot_args += ['-p', f'{k}:={v}']
    peers = [subprocess.Popen([sys.executable, '-m', 'vla_ros.ros.sim_nodes', 'robot',
                               '--ros-args', *robot_args], env=env)]
    if not scene:
        peers.append(subprocess.Popen(
            [sys.executable, '-m', 'vla_ros.ros.sim_nodes', 'cameras', '--ros-args',
             '-p', f'camera_names:={cams}'.replace("'", '')], env=env))
    rclpy.init()
    node = VlaPolicyNode(parameter_overrides=[
        Parameter('model_path', value=package), Parameter('robot', value=robot),
        Parameter('controller', value=controller), Parameter('instruction', value=instruction),
        Parameter('camera_names', value=cams),
        Parameter('camera_topics', value=[f'/camera/{c}/image_raw' for c in cams]),
        Parameter('control_rate_hz', value=control_rate_hz),
        Parameter('qos_reliable_sensors', value=True),
        *[Parameter(k, value=v) for k, v in (params or {}).items()]])
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError(f'configure failed: {node._fault}')
        node.trigger_activate()
        t_end = time.monotonic() + 30
        while node.slots.staleness(node.now_s(), 0.5):
            if time.monotonic() > t_end:
                raise RuntimeError('no camera images or joint states from the peers within '
                                   f'30 s: {node.slots.staleness(node.now_s(), 0.5)}')
            time.sleep(0.05)
        yield node, m, executor
    finally:
        if node.worker:
            node.worker.stop(timeout_s=10)
        executor.shutdown(timeout_sec=5)
        spin.join(timeout=5)  # no callback may still be waiting on the node's handles
        node.destroy_node()
        rclpy.shutdown()
        for p in peers:
            p.terminate()
        for p in peers:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()


def runtime_report(node, m, inferences0: int = 0) -> dict:
    """What the node's worker measured: latencies, rate, exits taken and the backbone compute
    they saved (from the layers run per chunk)."""
    w = node.worker
    counts = w.stats.exit_counts
    rep = {
        'e2e_image_to_command_ms': _pct(node.e2e_ms),
        'inference_latency_ms': _pct(list(w.latencies_ms)),
        'inferences': w.stats.inferences - inferences0,
        'inference_hz': w.inference_hz(),
        'safety_state': node._last_cmd.state if node._last_cmd else 'none',
        'exit_histogram': {str(k): v for k, v in sorted(counts.items())},
        'inference_failures': w.stats.failures,
    }
    if counts:
        layers = sum((k + 1) * v for k, v in counts.items()) / sum(counts.values())
        rep['backbone_compute_saved'] = 1.0 - layers / m.exits.num_layers
    return rep


def run_node_bench(package: str, robot: str = 'xarm6', controller: str = '',
                   duration_s: float = 20.0, control_rate_hz: float = 100.0,
                   swap_to: str | None = None, instruction: str = 'pick up the red block',
                   params: dict | None = None, progress=print) -> dict:
    from rclpy.parameter import Parameter

    report: dict = {'robot': robot, 'control_rate_hz': control_rate_hz,
                    'params': dict(params or {}), 'cpus': os.cpu_count()}
    with policy_with_peers(package, robot, controller, control_rate_hz, instruction,
                           params) as (node, m, _):
        report['package'] = m.name
        ok, msg = node._engage()
        progress(f'bench node: {msg}; running {duration_s:g} s')
        node._ticks.clear()
        node.e2e_ms.clear()
        missed0 = node._missed_ticks
        inferences0 = node.worker.stats.inferences
        t0 = time.monotonic()
        node.worker.stats.exit_counts.clear()
        while time.monotonic() - t0 < duration_s:
            time.sleep(min(1.0, duration_s - (time.monotonic() - t0)))
            w = node.worker
            lat = list(w.latencies_ms)[-20:]
            cmd = node._last_cmd
            why = f' ({cmd.reason})' if cmd and cmd.reason else ''
            progress(f'  t={time.monotonic() - t0:4.1f} s  inference {w.inference_hz():4.1f} Hz'
                     f'  latency {np.median(lat) if lat else 0:5.0f} ms  exit layer '
                     f'{w.stats.last_exit_layer}  plan left '
                     f'{node.queue.remaining_s(node.now_s()):.2f} s  safety '
                     f'{cmd.state if cmd else "-"}{why}')
        ticks = np.array(node._ticks)
        periods = np.diff(ticks) * 1000.0
        nominal = 1000.0 / control_rate_hz
        report.update({
            'tick_period_ms': _pct(periods),
            'tick_period_error_ms': _pct(np.abs(periods - nominal)),
            'missed_ticks': node._missed_ticks - missed0,
            'ticks': int(len(ticks)),
        })
        report.update(runtime_report(node, m, inferences0))
        err = report['tick_period_error_ms']
        progress(f'bench node: tick period error p50 {err.get("p50", 0):.2f} ms, p99 '
                 f'{err.get("p99", 0):.2f} ms, missed {report["missed_ticks"]}; image->command '
                 f'p50 {report["e2e_image_to_command_ms"].get("p50", 0):.0f} ms; '
                 f'{report["inference_hz"]:.1f} inferences/s')
        if swap_to:
            node._ticks.clear()
            missed0 = node._missed_ticks
            t0 = time.monotonic()
            result = node.set_parameters([Parameter('model_path', value=swap_to)])[0]
            if not result.successful:
                raise RuntimeError(f'swap rejected: {result.reason}')
            while node._swap['state'] == 'loading' and time.monotonic() - t0 < 120:
                time.sleep(0.05)
            time.sleep(1.0)
            periods = np.diff(np.array(node._ticks)) * 1000.0
            report['swap'] = {
                'state': node._swap['state'], 'detail': node._swap['detail'],
                'seconds': time.monotonic() - t0 - 1.0,
                'missed_ticks_during_swap': node._swap['missed'],
                'missed_ticks_window': node._missed_ticks - missed0,
                'tick_period_error_ms': _pct(np.abs(periods - nominal))}
            progress(f'bench node: swap {node._swap["state"]} in '
                     f'{report["swap"]["seconds"]:.1f} s, {node._swap["missed"]} ticks missed')
    return report
