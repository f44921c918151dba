"""The vla_policy node's status: `~/status` and `/diagnostics` at 2 Hz.

An executor timer; reads the worker's statistics, the queue, the last safety command, the
swap state and the grippers' goals, and publishes one DiagnosticStatus (also as a
DiagnosticArray on /diagnostics).
Mixed into VlaPolicyNode (policy_node.py).
"""

from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from vla_ros.ros.node.guard import guarded


class StatusMixin:
    """~/status and /diagnostics from the worker, queue, filter and swap state."""

    @guarded('status')
    def _on_status(self) -> None:
        if self.worker is None:
            return
        w = self.worker
        lat = np.array(w.latencies_ms)
        periods = np.diff(self._ticks[-200:]) * 1000.0
        cmd = self._last_cmd
        safety_state = cmd.state if cmd else self.safety.state
        values = {
            'model': w.stats.model_name, 'inference_hz': f'{w.inference_hz():.2f}',
            'latency_p50_ms': _percentile(lat, 50, '.1f'),
            'latency_p99_ms': _percentile(lat, 99, '.1f'),
            'exit_layer': str(w.stats.last_exit_layer),
            'queue_remaining_s': f'{self.queue.remaining_s(self.now_s()):.3f}',
            'merge_strategy': self.queue.strategy.describe(),
            'safety_state': safety_state, 'hold_reason': cmd.reason if cmd else '',
            'inference_failures': str(w.stats.failures), 'last_error': w.stats.last_error,
            'inference_process': w.stats.restart_state or 'serving',
            'inference_restarts': str(w.stats.restarts),
            'input_errors': str(self.slots.errors.count),
            'control_period_p99_ms': _percentile(periods, 99, '.2f'),
            'missed_control_ticks': str(self._missed_ticks),
            'control_loop': self._control_process_state(),
            'external_speed_scale': f'{self._external_scale:.3f}',
            'model_swap': f'{self._swap["state"]} {self._swap["detail"]}'.strip(),
        }
        gripper_values, gripper_failing = self._gripper_status()
        values.update(gripper_values)
        holding = safety_state in ('holding', 'estop')
        level = (DiagnosticStatus.ERROR if safety_state == 'estop' or w.stats.failures and
                 w.stats.last_error == self._fault or self._control_ended else
                 DiagnosticStatus.WARN if holding or self._swap['state'] == 'failed' or
                 gripper_failing else
                 DiagnosticStatus.OK)
        message = (f'{safety_state}: {cmd.reason}' if cmd and cmd.reason else safety_state)
        if self._control_ended and self._control_ended not in message:
            message += f'; {self._control_ended}'
        if gripper_failing:
            message += '; gripper: ' + '; '.join(
                c.last_error for _, c in self._gripper_channels if c.failing)
        status = DiagnosticStatus(level=level, name='vla_policy: policy', message=message,
                                  hardware_id=self.adapter.robot.name,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        self._pubs['status'].publish(status)
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self._pubs['diagnostics'].publish(arr)


def _percentile(values: np.ndarray, q: float, fmt: str) -> str:
    """'nan' before the first sample (no numpy warning on every start)."""
    return format(float(np.percentile(values, q)), fmt) if len(values) else 'nan'
