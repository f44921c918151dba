"""Parameters of the vla_policy node: declaration with typed descriptors, and changes.

Declarations (types, ranges, choices, dynamic or not) are in params.py. This module declares
them (a bad value in a parameter file is kept as a reason configure fails with, never an
exception at start), turns integers given for doubles into doubles, and answers every
SetParameters request: all of it is checked before anything changes, and any failure, an
unexpected exception included, is a rejection with its reason and the old values kept. A
parameter request can never stop the node. Runs on the executor. Mixed into VlaPolicyNode.
"""

from __future__ import annotations

from dataclasses import replace

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.parameter import Parameter

from vla_ros.ros.node.params import BY_NAME, PARAMS, Param
from vla_ros.runtime.chunking.merge import make_strategy
from vla_ros.runtime.chunking.scheduling import RequestPolicy
from vla_ros.runtime.policy.guidance import guided_support
from vla_ros.runtime.policy.policy import PolicyConfig

POLICY_PARAMS = ('policy_mode', 'threshold_set', 'exit_layer')
DYNAMIC = 'dynamic: may change while active'
STATIC = 'static: may change only while unconfigured'


def descriptor(p: Param) -> ParameterDescriptor:
    """The ROS descriptor of a parameter: its type, and its range as FloatingPointRange /
    IntegerRange so `ros2 param describe` shows it and rclpy enforces it. Choices and when it
    may change have no ROS field: additional_constraints says both ('dynamic' or 'static',
    then the choices), and they are checked here. Not read_only: static parameters may change
    while unconfigured (rejected with a reason otherwise)."""
    when = DYNAMIC if p.dynamic else STATIC
    d = ParameterDescriptor(description=p.description, read_only=False,
                            additional_constraints=(f'{when}; one of {list(p.choices)}'
                                                    if p.choices else when))
    if p.range is not None and p.kind == 'double':
        d.floating_point_range = [FloatingPointRange(from_value=float(p.range[0]),
                                                     to_value=float(p.range[1]), step=0.0)]
    elif p.range is not None and p.kind == 'integer':
        d.integer_range = [IntegerRange(from_value=int(p.range[0]), to_value=int(p.range[1]),
                                        step=0)]
    return d


def policy_config(values: dict) -> PolicyConfig:
    """The PolicyConfig of policy_mode, threshold_set and exit_layer; ValueError if they do
    not fit together (fixed mode without an exit layer)."""
    layer = values['exit_layer']
    return PolicyConfig(mode=values['policy_mode'], threshold_set=values['threshold_set']
                        or None, exit_layer=layer if layer >= 0 else None)


class ReconfigureMixin:
    """Declares the parameters and answers SetParameters: reject with a reason, or apply."""

    def _declare_parameters(self) -> dict[str, str]:
        """Declares every parameter with a typed descriptor. A bad value from a parameter
        file never stops the process: the default is declared instead and the reason kept,
        so that configure fails with it (name -> reason)."""
        errors = {}
        overrides = getattr(self, '_parameter_overrides', {})
        for p in PARAMS:
            given = overrides.get(p.name)
            if given is not None and p.coerce(given.value) is not given.value:
                overrides[p.name] = Parameter(p.name, value=p.coerce(given.value))
            try:
                value = self.declare_parameter(p.name, p.default, descriptor(p)).value
            except (InvalidParameterValueException, InvalidParameterTypeException,
                    TypeError, ValueError) as e:
                errors[p.name] = f'{p.name}: {e}'
                self.declare_parameter(p.name, p.default, descriptor(p), ignore_override=True)
                continue
            reason = p.check(value)
            if reason:
                errors[p.name] = reason
        if not errors:
            try:
                policy_config({n: self.p(n) for n in POLICY_PARAMS})
            except ValueError as e:
                errors['policy_mode'] = f'policy_mode {self.p("policy_mode")!r}: {e}'
        return errors

    def _coerce_parameters(self, params: list[Parameter]) -> list[Parameter]:
        """Pre-set callback (Iron and later): `ros2 param set /vla_policy speed_scale 1`
        sends an integer; the double it means is set."""
        out = []
        for param in params:
            spec = BY_NAME.get(param.name)
            value = spec.coerce(param.value) if spec is not None else param.value
            out.append(param if value is param.value else Parameter(param.name, value=value))
        return out

    def _on_set_parameters(self, params) -> SetParametersResult:
        try:
            reason = self._set_parameters(params)
        except Exception as e:  # the handling is complete: reject, log, keep serving
            reason = f'rejected: {type(e).__name__}: {e}'
            self.get_logger().error(f'parameter request {[p.name for p in params]} {reason}')
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _set_parameters(self, params) -> str:
        """'' after applying the whole request, or the reason it is rejected (nothing
        applied)."""
        configured = self.worker is not None
        values = {}
        for param in params:
            spec = BY_NAME.get(param.name)
            if spec is None:
                continue
            value = spec.coerce(param.value)
            reason = spec.check(value)
            if reason:
                return reason
            if configured and not spec.dynamic:
                return (f'{param.name} cannot change while configured; deactivate and clean '
                        'up first')
            values[param.name] = value
        if any(n in values for n in POLICY_PARAMS):
            try:
                cfg = policy_config({n: values.get(n, self.p(n)) for n in POLICY_PARAMS})
                if configured:
                    self._validate_policy_config(cfg)
            except (ValueError, KeyError) as e:
                return str(e.args[0] if isinstance(e, KeyError) and e.args else e)
        if not configured:
            return ''
        if 'model_path' in values and values['model_path'] != self.model_path:
            reason = self._check_swap(values['model_path'])
            if reason:
                return reason
        if values.get('merge_strategy') == 'rtc_guided' and guided_support(self.manifest):
            return f'merge_strategy rtc_guided rejected: {guided_support(self.manifest)}'
        if any(n in values for n in POLICY_PARAMS):  # once, with the request's values together
            self.worker.reconfigure(cfg)
        for name, value in values.items():
            self._apply(name, value)
        return ''

    def _apply(self, name: str, value) -> None:
        """Applies one dynamic parameter, already checked."""
        if name == 'model_path':
            if value != self.model_path:  # the model already serving: nothing to do
                self._begin_swap(value)
        elif name == 'instruction':
            self.slots.instruction = value
        elif name in ('merge_strategy', 'rtc_schedule'):
            strategy = value if name == 'merge_strategy' else self.p('merge_strategy')
            schedule = value if name == 'rtc_schedule' else self.p('rtc_schedule')
            self.queue.set_strategy(make_strategy(strategy, schedule=schedule)
                                    if strategy == 'rtc_blend' else make_strategy(strategy))
            self.worker.rtc_prefix = strategy in ('rtc_inpaint', 'rtc_guided')
        elif name == 'latency_compensation':
            self.queue.latency_compensation = bool(value)
        elif name == 'request_fraction':
            self.worker.request = RequestPolicy('horizon_fraction', value)
        elif name == 'deadline_ms':
            self.worker.deadline_ms = value or None
        elif name == 'added_latency_ms':
            self.worker.added_latency_s = value / 1000.0
        elif name in ('speed_scale', 'acceleration_scale'):
            self._set_filter_config(replace(self.safety.config, **{name: value}))
        elif name in ('gripper_fault_behavior', 'gripper_max_effort'):
            self._set_gripper_config(name, value)

    def _validate_policy_config(self, cfg: PolicyConfig) -> None:
        m = self.manifest
        if cfg.mode == 'early_exit' and cfg.threshold_set:
            m.threshold_set(cfg.threshold_set)
        if cfg.mode == 'fixed' and cfg.exit_layer not in self.policy.exits:
            raise ValueError(f'exit_layer must be one of {list(self.policy.exits)} for fixed '
                             'mode')
