"""Real rclpy graphs for tests: a private Context, a MultiThreadedExecutor on a thread, a
camera publisher, and helpers to call services and set parameters like `ros2` does."""

from __future__ import annotations

import sys
import threading
import time
import traceback

import numpy as np
import rclpy
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import SetParameters
from rclpy.context import Context
from rclpy.executors import (
    ExternalShutdownException,
    MultiThreadedExecutor,
    SingleThreadedExecutor,
)
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from vla_ros.ros.conversions import numpy_to_image


class RosHarness:
    """The node under test spins in a MultiThreadedExecutor as in production; the test's own
    nodes (cameras, sim robot) each spin in their own executor thread, so a busy node under
    test cannot starve the inputs it is being fed (as separate processes would not)."""

    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executors = [self.executor]
        self.nodes = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=_spin, args=(self.executor, self._stop),
                                          daemon=True)]
        self._threads[0].start()
        self.io = Node('test_io', context=self.context)
        self.add(self.io, own_executor=True)
        self.camera_on = threading.Event()
        self.camera_on.set()
        self.frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        self.malformed = False
        self.camera_stamps: list[float] = []  # every header stamp published, in seconds

    def add(self, node, own_executor: bool = False) -> None:
        if own_executor:
            ex = SingleThreadedExecutor(context=self.context)
            ex.add_node(node)
            self.executors.append(ex)
            t = threading.Thread(target=_spin, args=(ex, self._stop), daemon=True)
            t.start()
            self._threads.append(t)
        else:
            self.executor.add_node(node)
        self.nodes.append(node)

    def start_cameras(self, names=('scene', 'wrist'), rate_hz: float = 30.0,
                      namespace: str = '') -> None:
        pubs = {c: self.io.create_publisher(Image, f'{namespace}/camera/{c}/image_raw', 10)
                for c in names}

        def publish() -> None:
            if not self.camera_on.is_set():
                return
            for p in pubs.values():
                msg = Image()
                if self.malformed:  # an encoding the node does not take
                    msg.encoding, msg.height, msg.width, msg.step = '16UC1', 48, 64, 128
                    msg.data = bytes(48 * 128)
                else:
                    numpy_to_image(self.frame, 'rgb8', msg)
                msg.header.stamp = self.io.get_clock().now().to_msg()
                self.camera_stamps.append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
                p.publish(msg)

        self.io.create_timer(1.0 / rate_hz, publish)

    def collect(self, msg_type, topic: str, qos: int = 10) -> list:
        got: list = []
        self.io.create_subscription(msg_type, topic, got.append, qos)
        return got

    def call(self, srv_type, name: str, request, timeout: float = 10.0):
        cli = self.io.create_client(srv_type, name)
        assert cli.wait_for_service(timeout_sec=timeout), f'{name} not available'
        fut = cli.call_async(request)
        assert wait_for(fut.done, timeout), f'{name} did not answer'
        return fut.result()

    def set_params(self, node: str, **values):
        """What `ros2 param set` does: SetParameters on the node's service."""
        msgs = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        req = SetParameters.Request(parameters=[ParameterMsg(name=m.name, value=m.value)
                                                for m in msgs])
        return self.call(SetParameters, f'/{node}/set_parameters', req).results

    def close(self) -> None:
        for n in self.nodes:
            worker = getattr(n, 'worker', None)
            if worker is not None:
                worker.stop(timeout_s=10.0)
        # The spin threads end first, then the executors shut down, then the nodes go: an
        # executor shut down under a thread still building its wait set (its guard condition
        # gone) or a node destroyed then raises in that thread.
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        for ex in self.executors:
            ex.shutdown(timeout_sec=10)
        for n in self.nodes:
            n.destroy_node()
        rclpy.shutdown(context=self.context)


def _spin(executor, stop: threading.Event) -> None:
    # An exception escaping a callback ends the loop: report it loudly, it is a bug.
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)
    except ExternalShutdownException:
        pass
    except BaseException:
        traceback.print_exc(file=sys.stderr)
        raise


def wait_for(predicate, timeout: float = 10.0, period: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(period)
    return bool(predicate())


def start_policy_node(ros: RosHarness, overrides: dict, namespace: str = '',
                      activate: bool = True):
    """A vla_policy node on the harness with these parameters; configured, activated and
    holding joint states when `activate`."""
    from rclpy.lifecycle import TransitionCallbackReturn

    from vla_ros.ros.node.policy_node import VlaPolicyNode

    node = VlaPolicyNode(context=ros.context, namespace=namespace, parameter_overrides=[
        Parameter(k, value=v) for k, v in overrides.items()])
    ros.add(node)
    if activate:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert wait_for(lambda: node.slots.joints() is not None, 10)
    return node


# One row per injected fault, printed as a table at the end of the run (conftest.py).
FAULT_ROWS: list[dict] = []


class Recorder:
    """Every output of the node's safety filter with the tick it came from, and every
    command message the node published, in order (wraps the real objects: a node whose
    control loop is its own thread, control_process false)."""

    def __init__(self, node) -> None:  # a VlaPolicyNode
        self.node = node
        self.fault_tick: int | None = None
        self.steps: list = []  # (tick, state, positions, velocities)
        self.published: list = []  # (tick, filter state, message)
        step, publish = node.safety.step, node._pubs['command'].publish

        def recorded_step(*args, **kwargs):
            cmd = step(*args, **kwargs)
            self.steps.append((len(node._ticks), cmd.state, cmd.positions, cmd.velocities))
            return cmd

        def recorded_publish(msg):
            state = node._last_cmd.state if node._last_cmd is not None else ''
            self.published.append((len(node._ticks), state, msg))
            return publish(msg)

        node.safety.step = recorded_step
        node._pubs['command'].publish = recorded_publish

    def mark_fault(self) -> None:
        """Call just before injecting a fault: ticks to hold count from here."""
        self.fault_tick = len(self.node._ticks)

    def ticks_to_hold(self, states=('holding', 'estop', 'disengaged')) -> int | None:
        """Control ticks from the fault's injection to the filter's first hold output."""
        return next((t - self.fault_tick for t, s, _, _ in self.steps
                     if t >= self.fault_tick and s in states), None)

    def report(self, scenario: str, recovered: bool | None) -> None:
        """A row of the fault table: the scenario, ticks to hold, limit ratios, recovery."""
        v, a = self.limit_ratios()
        FAULT_ROWS.append({'scenario': scenario, 'ticks_to_hold': self.ticks_to_hold(),
                           'max_v_ratio': v, 'max_a_ratio': a, 'recovered': recovered})

    def limit_ratios(self) -> tuple[float, float]:
        """Largest |v| / vmax and |dv/dt| / amax over consecutive filter outputs."""
        f = self.node.safety
        dt = 1.0 / self.node.p('control_rate_hz')
        vel = np.array([s[3] for s in self.steps])
        vmax = f.vmax
        amax = f.amax * f.config.acceleration_scale
        v_ratio = float(np.max(np.abs(vel) / vmax)) if len(vel) else 0.0
        a_ratio = float(np.max(np.abs(np.diff(vel, axis=0)) / dt / amax)) if len(vel) > 1 \
            else 0.0
        return v_ratio, a_ratio


def moving(node) -> bool:
    return node._last_cmd is not None and node._last_cmd.state == 'engaged' and \
        float(np.max(np.abs(node._last_cmd.velocities))) > 1e-3
