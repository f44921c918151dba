"""`vla-ros bench node PKG`: the node under load, as deployed.

The sim robot and the cameras run as separate processes (as a driver and camera drivers
would); the vla_policy node runs here, engaged, with inference running continuously. Measured:
control-tick period error at control_rate_hz over every tick of the run (`tick_error_ms`,
`missed_ticks`), beside a bare loop at the same rate in its own process during the same run
(`reference_tick_error_ms`, reference_loop.py: what the machine's load alone costs); latency
from an image's stamp to the first command that leaves carrying the chunk inferred from it
(in trajectory mode, the first trajectory message); inference rate and latency; with
--swap-to, the ticks missed while a second package loads and swaps in, against the miss rate
of the run before it. The machine's load is recorded at the start and the end. A
ROS_DOMAIN_ID already set is used; otherwise a random one keeps off other graphs.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from vla_ros.ros.evaluation.reference_loop import tick_stats, window
from vla_ros.runtime.bench.load import machine_load


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
                      peer_params: dict | None = None, executor_kind: str = 'multi'):
    """Yields (node, manifest): the vla_policy node configured, activated and receiving, in
    this process, with the sim robot (and the sim cameras, or the robot's scene cameras) as
    separate processes on a private ROS domain; everything is torn down on exit."""
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from vla_ros.ros.node.policy_node import VlaPolicyNode, make_executor
    from vla_ros.runtime.package.loader import read_manifest

    m = read_manifest(package)
    cams = [c.name for c in m.cameras]
    env = dict(os.environ)
    if not env.get('ROS_DOMAIN_ID'):
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
    executor = make_executor(executor_kind)
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
        nodes = executor.get_nodes()  # the policy node and any a caller added (a client)
        executor.shutdown(timeout_sec=5)
        # No node is destroyed before the spin thread has ended: one destroyed while that
        # thread builds its wait set raises InvalidHandle there.
        spin.join(timeout=5)
        for n in nodes:
            n.destroy_node()
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


def _thread_cpu_s() -> dict[str, float]:
    """CPU seconds used so far by each thread of this process, by Python thread name (native
    threads, DDS's among them, are summed as 'native')."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf('SC_CLK_TCK')
    out: dict[str, float] = {}
    try:
        tids = os.listdir('/proc/self/task')
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f'/proc/self/task/{tid}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        name = names.get(int(tid), 'native')
        name = 'executor' if name.startswith('Thread-') or 'ThreadPool' in name else name
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _process_cpu_s(pid: int) -> float:
    """CPU seconds used so far by a process (the control process: a process of its own)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def _start_reference(rate_hz: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, '-m', 'vla_ros.ros.evaluation.reference_loop',
                             str(rate_hz)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    if proc.stdout.readline().strip() != 'ticking':
        raise RuntimeError(f'the reference loop did not start (exit code {proc.poll()})')
    return proc


def _stop_reference(proc: subprocess.Popen) -> list[float]:
    try:
        out, _ = proc.communicate('\n', timeout=30)
        return json.loads(out)
    except (subprocess.TimeoutExpired, json.JSONDecodeError):
        proc.kill()
        proc.wait(5)
        return []


def run_node_bench(package: str, robot: str = 'xarm6', controller: str = '',
                   duration_s: float = 20.0, control_rate_hz: float = 100.0,
                   swap_to: str | None = None, instruction: str = 'pick up the red block',
                   params: dict | None = None, progress=print,
                   executor: str = 'multi') -> dict:
    report: dict = {'robot': robot, 'control_rate_hz': control_rate_hz, 'executor': executor,
                    'params': dict(params or {}), 'cpus': os.cpu_count(),
                    'ros_domain_id': os.environ.get('ROS_DOMAIN_ID', '')}
    with policy_with_peers(package, robot, controller, control_rate_hz, instruction,
                           params, executor_kind=executor) as (node, m, _):
        report['package'] = m.name
        report['ros_domain_id'] = os.environ.get('ROS_DOMAIN_ID', '')
        report['load_start'] = machine_load()
        reference = _start_reference(control_rate_hz)
        try:
            ok, msg = node._engage()
            progress(f'bench node: {msg}; running {duration_s:g} s')
            node._tick_log = []  # every tick from here on (the node's own list is trimmed)
            node.e2e_ms.clear()
            inferences0 = node.worker.stats.inferences
            node.worker.stats.exit_counts.clear()
            cpu0 = _thread_cpu_s()
            link = node._link
            ctl0 = _process_cpu_s(link.pid) if link is not None else 0.0
            t0 = time.monotonic()
            while time.monotonic() - t0 < duration_s:
                time.sleep(min(1.0, duration_s - (time.monotonic() - t0)))
                _progress_line(node, t0, progress)
            t1 = time.monotonic()
            cpu1 = _thread_cpu_s()
            report['thread_cpu_fraction'] = {k: (v - cpu0.get(k, 0.0)) / (t1 - t0)
                                             for k, v in sorted(cpu1.items())}
            report['control_loop'] = node._control_process_state()
            if link is not None:
                report['control_process_cpu_fraction'] = \
                    (_process_cpu_s(link.pid) - ctl0) / (t1 - t0)
            main = tick_stats(window(node._tick_log, t0, t1), control_rate_hz)
            report.update(main)
            report.update(runtime_report(node, m, inferences0))
            if swap_to:
                report['swap'] = _swap(node, swap_to, main, control_rate_hz)
        finally:
            ref_ticks = _stop_reference(reference)
            node._tick_log = None
        ref = tick_stats(window(ref_ticks, t0, t1), control_rate_hz)
        report['reference_tick_error_ms'] = {k: ref['tick_error_ms'][k] for k in ('p50', 'p99')
                                             if k in ref['tick_error_ms']}
        report['reference_missed_ticks'] = ref['missed_ticks']
        if ref['tick_error_ms'].get('p99'):
            report['tick_error_p99_over_reference'] = (report['tick_error_ms']['p99']
                                                       / ref['tick_error_ms']['p99'])
        if swap_to:
            ts0, ts1 = report['swap'].pop('_window')
            report['swap']['reference_missed_ticks'] = tick_stats(
                window(ref_ticks, ts0, ts1), control_rate_hz)['missed_ticks']
        report['load_end'] = machine_load()
        err, rerr = report['tick_error_ms'], report['reference_tick_error_ms']
        progress(f'bench node: tick error p50 {err.get("p50", 0):.2f} ms, p99 '
                 f'{err.get("p99", 0):.2f} ms (reference loop {rerr.get("p99", 0):.2f}), '
                 f'missed {report["missed_ticks"]} (reference {ref["missed_ticks"]}); '
                 f'image->command p50 {report["e2e_image_to_command_ms"].get("p50", 0):.0f} '
                 f'ms; {report["inference_hz"]:.1f} inferences/s')
    return report


def _progress_line(node, t0: float, progress) -> None:
    w = node.worker
    lat = list(w.latencies_ms)[-20:]
    cmd = node._last_cmd
    why = f' ({cmd.reason})' if cmd and cmd.reason else ''
    progress(f'  t={time.monotonic() - t0:4.1f} s  inference {w.inference_hz():4.1f} Hz'
             f'  latency {np.median(lat) if lat else 0:5.0f} ms  exit layer '
             f'{w.stats.last_exit_layer}  plan left '
             f'{node.queue.remaining_s(node.now_s()):.2f} s  safety '
             f'{cmd.state if cmd else "-"}{why}')


def _swap(node, swap_to: str, main: dict, rate_hz: float) -> dict:
    """Swaps to `swap_to` and measures from the request until the new model serves."""
    from rclpy.parameter import Parameter

    ts0 = time.monotonic()
    result = node.set_parameters([Parameter('model_path', value=swap_to)])[0]
    if not result.successful:
        raise RuntimeError(f'swap rejected: {result.reason}')
    while node._swap['state'] == 'loading' and time.monotonic() - ts0 < 300:
        time.sleep(0.02)
    ts1 = time.monotonic()
    time.sleep(0.2)  # the ticks right after the swap belong to the window too
    stats = tick_stats(window(node._tick_log, ts0, ts1 + 0.2), rate_hz)
    seconds = main.get('seconds') or 1.0
    return {'missed_ticks': stats['missed_ticks'], 'duration_s': ts1 - ts0,
            'background_missed_ticks_per_s': main['missed_ticks'] / seconds,
            'expected_background_missed_ticks': main['missed_ticks'] / seconds * (ts1 - ts0),
            'tick_error_ms': stats['tick_error_ms'], 'state': node._swap['state'],
            'detail': node._swap['detail'], '_window': (ts0, ts1 + 0.2)}
