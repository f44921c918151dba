"""Parameter changes of the vla_policy node: validation, and applying dynamic ones live.

Runs in the executor's set-parameters callback. Declarations (types, ranges, choices,
dynamic or not) are in params.py; this module checks each request against them and applies
the dynamic ones to the worker, the queue and the safety filter. Mixed into VlaPolicyNode.
"""

from __future__ import annotations

from dataclasses import replace

from rcl_interfaces.msg import SetParametersResult

from vla_ros.ros.node.params import BY_NAME
from vla_ros.runtime.chunking.merge import make_strategy
from vla_ros.runtime.chunking.scheduling import RequestPolicy
from vla_ros.runtime.policy.policy import PolicyConfig


class ReconfigureMixin:
    """The set-parameters callback: reject with a reason, or apply live."""

    def _on_set_parameters(self, params) -> SetParametersResult:
        active = self.worker is not None
        for param in params:
            spec = BY_NAME.get(param.name)
            if spec is None:
                continue
            reason = spec.check(param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            if active and not spec.dynamic:
                return SetParametersResult(successful=False, reason=(
                    f'{param.name} cannot change while configured; deactivate and clean up '
                    'first'))
        if not active:
            return SetParametersResult(successful=True)
        for param in params:
            reason = self._apply(param.name, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply(self, name: str, value) -> str:
        """Applies one dynamic parameter; '' or the reason it is rejected."""
        if name == 'model_path':
            return self._start_swap(value)
        if name == 'instruction':
            self.slots.instruction = value
        elif name in ('policy_mode', 'threshold_set', 'exit_layer'):
            current = self._policy_config()
            cfg = replace(current, **{'mode': value} if name == 'policy_mode' else
                          {'threshold_set': value or None} if name == 'threshold_set' else
                          {'exit_layer': value if value >= 0 else None})
            try:
                self._validate_policy_config(cfg)
            except (ValueError, KeyError) as e:
                return str(e)
            self.worker.reconfigure(cfg)
        elif name in ('merge_strategy', 'rtc_schedule'):
            strategy = value if name == 'merge_strategy' else self.p('merge_strategy')
            schedule = value if name == 'rtc_schedule' else self.p('rtc_schedule')
            self.queue.set_strategy(make_strategy(strategy, schedule=schedule)
                                    if strategy == 'rtc_blend' else make_strategy(strategy))
            self.worker.rtc_prefix = strategy == 'rtc_inpaint'
        elif name == 'latency_compensation':
            self.queue.latency_compensation = bool(value)
        elif name == 'request_fraction':
            self.worker.request = RequestPolicy('horizon_fraction', value)
        elif name == 'deadline_ms':
            self.worker.deadline_ms = value or None
        elif name == 'added_latency_ms':
            self.worker.added_latency_s = value / 1000.0
        elif name in ('speed_scale', 'acceleration_scale'):
            with self._safety_lock:
                c = self.safety.config
                self.safety.config = replace(c, **{name: value})
        return ''

    def _validate_policy_config(self, cfg: PolicyConfig) -> None:
        m = self.manifest
        if cfg.mode == 'early_exit' and cfg.threshold_set:
            m.threshold_set(cfg.threshold_set)
        if cfg.mode == 'fixed' and cfg.exit_layer not in self.policy.exits:
            raise ValueError(f'exit_layer must be one of {list(self.policy.exits)} for fixed '
                             'mode')
