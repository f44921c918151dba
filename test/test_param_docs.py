"""The README's parameter table is what the node declares: the same names, and for each the
type, default, range or choices and whether it may change while active, as a user reads them
with `ros2 param list / get / describe` (the node's parameter services); and what the table
says may change while active does, and what it says may not is refused."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import DescribeParameters, GetParameters, ListParameters
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter, parameter_value_to_python

from vla_ros.ros.node.policy_node import VlaPolicyNode

pytestmark = pytest.mark.ros

README = Path(__file__).resolve().parents[1] / 'README.md'
ROW = re.compile(r'^\| `(\w+)` \| (\w+) \| `(.*)` \| (.*?) \| '
                 r'(while active|unconfigured only) \|$')
TYPES = {ParameterType.PARAMETER_BOOL: 'bool', ParameterType.PARAMETER_INTEGER: 'integer',
         ParameterType.PARAMETER_DOUBLE: 'double', ParameterType.PARAMETER_STRING: 'string',
         ParameterType.PARAMETER_STRING_ARRAY: 'string_array'}
RCLPY_OWN = {'use_sim_time', 'start_type_description_service'}  # every rclpy node has them


def readme_table() -> dict[str, tuple[str, str, str, str]]:
    """name -> (type, default as JSON, range or choices, changes) from the README."""
    text = README.read_text()
    block = text[text.index('<!-- parameters:'):text.index('<!-- /parameters -->')]
    rows = {}
    for line in block.splitlines()[3:]:
        m = ROW.match(line)
        assert m, f'README parameter row does not parse: {line!r}'
        assert m.group(1) not in rows, f'{m.group(1)} is in the README table twice'
        rows[m.group(1)] = m.groups()[1:]
    return rows


def declared(ros, node_name: str = 'vla_policy') -> dict[str, tuple[str, str, str, str]]:
    """name -> (type, default as JSON, range or choices, changes) from the node's services."""
    names = [n for n in ros.call(ListParameters, f'/{node_name}/list_parameters',
                                 ListParameters.Request()).result.names if n not in RCLPY_OWN]
    values = ros.call(GetParameters, f'/{node_name}/get_parameters',
                      GetParameters.Request(names=names)).values
    descs = ros.call(DescribeParameters, f'/{node_name}/describe_parameters',
                     DescribeParameters.Request(names=names)).descriptors
    out = {}
    for name, value, d in zip(names, values, descs, strict=True):
        rng = d.floating_point_range or d.integer_range
        constraints = d.additional_constraints.split('; one of ')
        if rng:
            limits = f'[{rng[0].from_value}, {rng[0].to_value}]'
        elif len(constraints) == 2:
            limits = 'one of ' + ', '.join(f'`{c}`' for c in ast.literal_eval(constraints[1]))
        else:
            limits = ''
        changes = {'dynamic': 'while active', 'static': 'unconfigured only'}[
            constraints[0].split(':')[0]]
        out[name] = (TYPES[d.type], json.dumps(parameter_value_to_python(value)), limits,
                     changes)
    return out


@pytest.fixture
def node(ros):
    n = VlaPolicyNode(context=ros.context)
    ros.add(n)
    return n


def test_the_readme_lists_exactly_the_declared_parameters(ros, node):
    assert sorted(readme_table()) == sorted(declared(ros))


def test_each_readme_row_is_the_declared_type_default_limits_and_dynamic_flag(ros, node):
    table, real = readme_table(), declared(ros)
    wrong = {n: (table[n], real[n]) for n in table if n in real and table[n] != real[n]}
    assert not wrong, wrong


def test_what_the_table_calls_static_is_refused_while_configured(ros, node, robot_packages):
    node.set_parameters([Parameter('model_path', value=str(robot_packages['xarm6'])),
                         Parameter('inference_process', value=False)])
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    refused, accepted = [], []
    for name, (_, _, _, changes) in readme_table().items():
        value = node.get_parameter(name).value  # its own value: only the flag can refuse it
        result = ros.set_params('vla_policy', **{name: value})[0]
        (accepted if result.successful else refused).append((name, changes, result.reason))
    assert all(c == 'while active' for _, c, _ in accepted), accepted
    assert all(c == 'unconfigured only' and 'cannot change while configured' in r
               for _, c, r in refused), refused
