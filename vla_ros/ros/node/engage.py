"""The vla_policy node's engage gate: ~/engage and ~/reset, engage on activate, and bringing
the arm to rest on every transition out of active.

Engaging needs the node active and a fresh pose (motion starts from it); a transition out of
active disengages and waits, bounded, for the filter to brake the arm to a standstill before
anything is released. Services run on the executor and take `_safety_lock`. Mixed into
VlaPolicyNode (policy_node.py).
"""

from __future__ import annotations

import time

import numpy as np
from std_srvs.srv import SetBool, Trigger

from vla_ros.ros.node.guard import guarded

ENGAGE_ON_ACTIVATE_TIMEOUT_S = 30.0
REST_TIMEOUT_S = 5.0  # far above the slowest stop from full speed of any supported arm


class EngageMixin:
    """The engage gate and the stop on leaving active."""

    @guarded('engage on activate')
    def _retry_engage(self) -> None:
        if self._engage_until is None or not self._active:
            return
        ok, msg = self._engage()
        if ok or time.monotonic() > self._engage_until:
            self._engage_until = None
            if ok:
                self.get_logger().info(f'engage_on_activate: {msg}')
            else:
                self.get_logger().error(f'engage_on_activate gave up after '
                                        f'{ENGAGE_ON_ACTIVATE_TIMEOUT_S:.0f} s: {msg}; call '
                                        '~/engage when the robot is ready')

    def _bring_to_rest(self, why: str) -> None:
        """Every transition out of active: disengage, so that the filter brakes at the
        acceleration limit from its command (trajectory controllers get the hold on that
        tick), and keep the control loop running until the arm is at rest, bounded."""
        self._active = False
        self._engage_until = None
        if self.safety is None:
            return
        self._to_filter('disengage')
        if self.queue is not None:
            self.queue.clear()
            self._send_plan()
        alive = self._control_alive()
        deadline = time.monotonic() + REST_TIMEOUT_S
        while alive and time.monotonic() < deadline:
            with self._safety_lock:
                moving = bool(np.any(self.safety.vel))
            if not moving:
                break
            time.sleep(0.01)
        else:
            if alive:
                self.get_logger().error(f'{why}: the arm was still moving after '
                                        f'{REST_TIMEOUT_S:.0f} s of braking')
        time.sleep(2.0 / self.p('control_rate_hz'))  # the at-rest command goes out
        self.get_logger().info(f'{why}: arm brought to rest, commands stop')

    def _engage(self) -> tuple[bool, str]:
        # Engaging needs the current pose (motion starts from it); missing camera images
        # only make the filter hold until they arrive. The control process checks its own
        # joint states (the ones its filter starts from).
        if self._link is not None or self._control_ended:
            return self._engage_filter(None)
        joints = self.slots.joints()
        if joints is None:
            return False, 'cannot engage: no joint_states yet'
        age = self.now_s() - joints.received_s
        if age * 1000.0 > self.p('max_staleness_ms'):
            return False, f'cannot engage: joint_states are {age * 1000:.0f} ms old'
        measured = self.adapter.joint_positions(joints.names, joints.positions)
        return self._engage_filter(measured)

    @guarded('engage service')
    def _on_engage(self, request: SetBool.Request, response: SetBool.Response):
        if self.safety is None:
            response.success, response.message = False, 'not configured'
            return response
        if request.data and not self._active:
            response.success, response.message = False, ('cannot engage: the node is not '
                                                         'active; activate it first')
        elif request.data:
            response.success, response.message = self._engage()
        else:
            self._to_filter('disengage')
            response.success, response.message = True, 'disengaged: holding'
        self.get_logger().info(f'~/engage {request.data}: {response.message}')
        return response

    @guarded('reset service')
    def _on_reset(self, request: Trigger.Request, response: Trigger.Response):
        if self.safety is None:
            response.success, response.message = False, 'not configured'
            return response
        self._to_filter('reset')
        self.queue.clear()
        self._send_plan()
        self._fault = ''
        self._callback_fault_at = -1e9
        response.success, response.message = True, 'reset: e-stop cleared; engage to move'
        self.get_logger().info(response.message)
        return response
