"""Typed manifest access (`reader.Reader`): each wrong value is refused with an error naming
the field's path, the value and what is allowed; defaults, bounds and unknown keys."""

from __future__ import annotations

import contextlib
import math
import re

import pytest

from vla_ros.runtime.errors import PackageError
from vla_ros.runtime.package.reader import Reader


@contextlib.contextmanager
def _fails(kind: str, message: str):
    """A PackageError of `kind` whose whole message is `message`."""
    with pytest.raises(PackageError, match=f'^{re.escape(message)}$') as info:
        yield info
    assert info.value.kind == kind


def test_a_missing_required_field_is_named_with_its_path():
    with _fails('invalid', 'manifest cam.height: is required but missing'):
        Reader({}, 'cam').get('height', int)


def test_a_field_of_the_root_object_is_named_without_a_leading_dot():
    with _fails('invalid', 'manifest name: is required but missing'):
        Reader({}, '').get('name', str)


def test_a_missing_optional_field_gives_its_default():
    r = Reader({}, 'x')
    assert r.get('a', int, 7) == 7
    assert r.get('b', dict, None) is None
    r.done()  # asked-for keys are not unknown even when absent


def test_a_present_field_wins_over_its_default():
    assert Reader({'a': 3}, 'x').get('a', int, 7) == 3


def test_a_boolean_is_never_taken_for_a_count():
    with _fails('invalid', 'manifest x.n: expected int, got a boolean'):
        Reader({'n': True}, 'x').get('n', int)
    with _fails('invalid', 'manifest x.n: expected int or float, got a boolean'):
        Reader({'n': False}, 'x').get('n', (int, float))


def test_a_boolean_is_read_where_a_flag_is_asked_for():
    assert Reader({'f': True}, 'x').get('f', bool) is True
    assert Reader({'f': False}, 'x').get('f', (bool, type(None))) is False


def test_a_value_of_the_wrong_type_names_the_types_and_the_value():
    with _fails('invalid', "manifest x.n: expected int, got str 'four'"):
        Reader({'n': 'four'}, 'x').get('n', int)
    with _fails('invalid', 'manifest x.n: expected str or NoneType, got int 4'):
        Reader({'n': 4}, 'x').get('n', (str, type(None)))


def test_a_long_wrong_value_is_shortened_in_the_message():
    with pytest.raises(PackageError) as info:
        Reader({'n': 'y' * 500}, 'x').get('n', int)
    assert str(info.value) == f"manifest x.n: expected int, got str {('y' * 500)!r:.60}"


def test_a_non_object_is_refused_where_an_object_is_expected():
    with _fails('invalid', 'manifest cameras[0]: expected an object, got list'):
        Reader([], 'cameras[0]')


def test_a_choice_outside_the_allowed_values_lists_them():
    with _fails('invalid', "manifest x.mode: 'up' is not one of ['absolute', 'delta']"):
        Reader({'mode': 'up'}, 'x').choice('mode', ('absolute', 'delta'))
    assert Reader({'mode': 'delta'}, 'x').choice('mode', ('absolute', 'delta')) == 'delta'
    assert Reader({}, 'x').choice('mode', ('absolute', 'delta'), 'absolute') == 'absolute'


def test_a_choice_without_default_is_required():
    with _fails('invalid', 'manifest x.mode: is required but missing'):
        Reader({}, 'x').choice('mode', ('a',))


def test_int_bounds_are_inclusive():
    assert Reader({'n': 8}, 'x').int_in('n', 8, 16) == 8
    assert Reader({'n': 16}, 'x').int_in('n', 8, 16) == 16
    with _fails('invalid', 'manifest x.n: 7 is outside [8, 16]'):
        Reader({'n': 7}, 'x').int_in('n', 8, 16)
    with _fails('invalid', 'manifest x.n: 17 is outside [8, 16]'):
        Reader({'n': 17}, 'x').int_in('n', 8, 16)


def test_an_int_without_upper_bound_names_only_the_lower_one():
    assert Reader({'n': 10 ** 9}, 'x').int_in('n', 0) == 10 ** 9
    with _fails('invalid', 'manifest x.n: -1 is outside >= 0'):
        Reader({'n': -1}, 'x').int_in('n', 0)


def test_an_int_default_is_used_when_absent_and_required_otherwise():
    assert Reader({}, 'x').int_in('n', 1, default=1) == 1
    with _fails('invalid', 'manifest x.n: is required but missing'):
        Reader({}, 'x').int_in('n', 1)
    with _fails('invalid', 'manifest x.n: expected int, got float 1.5'):
        Reader({'n': 1.5}, 'x').int_in('n', 1)


def test_a_number_is_read_as_a_float_from_an_int():
    value = Reader({'v': 2}, 'x').number('v')
    assert value == 2.0 and type(value) is float


@pytest.mark.parametrize('value', [math.inf, -math.inf, math.nan])
def test_a_non_finite_number_is_refused(value):
    with _fails('non_finite', f'manifest x.v: {value} is not finite'):
        Reader({'v': value}, 'x').number('v')


def test_a_closed_lower_bound_admits_its_value():
    assert Reader({'v': 0}, 'x').number('v', lo=0.0) == 0.0
    with _fails('invalid', 'manifest x.v: -0.5 must be >= 0.0'):
        Reader({'v': -0.5}, 'x').number('v', lo=0.0)


def test_an_open_lower_bound_refuses_its_value():
    with _fails('invalid', 'manifest x.v: 0.0 must be > 0.0'):
        Reader({'v': 0.0}, 'x').number('v', lo=0.0, lo_open=True)
    with _fails('invalid', 'manifest x.v: -1.0 must be > 0.0'):
        Reader({'v': -1}, 'x').number('v', lo=0.0, lo_open=True)
    assert Reader({'v': 1e-9}, 'x').number('v', lo=0.0, lo_open=True) == 1e-9


def test_an_upper_bound_admits_its_value():
    assert Reader({'v': 1.0}, 'x').number('v', hi=1.0) == 1.0
    with _fails('invalid', 'manifest x.v: 1.5 must be <= 1.0'):
        Reader({'v': 1.5}, 'x').number('v', hi=1.0)


def test_an_unbounded_number_takes_any_finite_value():
    assert Reader({'v': -1e300}, 'x').number('v') == -1e300
    assert Reader({'v': 1e300}, 'x').number('v', lo=None, hi=None) == 1e300


def test_a_number_default_is_used_when_absent():
    assert Reader({}, 'x').number('v', lo=0.0, hi=1.0, default=0.5) == 0.5
    with _fails('invalid', 'manifest x.v: is required but missing'):
        Reader({}, 'x').number('v')
    with _fails('invalid', 'manifest x.v: expected int or float, got a boolean'):
        Reader({'v': True}, 'x').number('v')


def test_floats_are_converted_and_counted():
    values = Reader({'v': [1, 2.5]}, 'x').floats('v', 2)
    assert values == (1.0, 2.5) and all(type(v) is float for v in values)
    assert Reader({'v': [1, 2, 3]}, 'x').floats('v') == (1.0, 2.0, 3.0)
    assert Reader({}, 'x').floats('v', default=[]) == ()
    with _fails('inconsistent', 'manifest x.v: has 3 values, expected 2'):
        Reader({'v': [1, 2, 3]}, 'x').floats('v', 2)


def test_a_float_entry_that_is_not_a_number_is_named_by_index():
    with _fails('invalid', 'manifest x.v[1]: expected a number, got True'):
        Reader({'v': [0.0, True]}, 'x').floats('v')
    with _fails('invalid', "manifest x.v[0]: expected a number, got '1'"):
        Reader({'v': ['1']}, 'x').floats('v')


def test_a_non_finite_float_entry_is_named_by_index():
    with _fails('non_finite', 'manifest x.v[2]: nan is not finite'):
        Reader({'v': [0.0, 1.0, math.nan]}, 'x').floats('v', 3)
    with _fails('non_finite', 'manifest x.v[0]: -inf is not finite'):
        Reader({'v': [-math.inf]}, 'x').floats('v')


def test_strings_must_be_non_empty():
    assert Reader({'s': ['a', 'b']}, 'x').strings('s') == ('a', 'b')
    assert Reader({}, 'x').strings('s', ()) == ()
    with _fails('invalid', "manifest x.s[1]: expected a non-empty string, got ''"):
        Reader({'s': ['a', '']}, 'x').strings('s')
    with _fails('invalid', 'manifest x.s[0]: expected a non-empty string, got 3'):
        Reader({'s': [3]}, 'x').strings('s')


def test_a_sub_object_reads_with_its_path():
    sub = Reader({'a': {'b': 1}}, 'x').sub('a')
    assert sub.where == 'x.a' and sub.data == {'b': 1}
    with _fails('invalid', 'manifest x.a.c: is required but missing'):
        sub.get('c', int)
    assert Reader({}, 'x').sub('a', None) is None
    assert Reader({}, 'x').sub('a', {}).data == {}
    with _fails('invalid', 'manifest x.a: is required but missing'):
        Reader({}, 'x').sub('a')


def test_list_items_read_with_their_index():
    items = Reader({'l': [{'a': 1}, {'a': 2}]}, 'x').items('l')
    assert [i.where for i in items] == ['x.l[0]', 'x.l[1]']
    assert [i.get('a', int) for i in items] == [1, 2]
    assert Reader({}, 'x').items('l', []) == []
    with _fails('invalid', 'manifest x.l[1]: expected an object, got int'):
        Reader({'l': [{}, 3]}, 'x').items('l')


def test_unknown_fields_are_listed_sorted():
    r = Reader({'b': 1, 'a': 2, 'k': 3}, 'x')
    r.get('k', int)
    with _fails('invalid', "manifest x: unknown field(s) ['a', 'b']"):
        r.done()


def test_unknown_fields_of_the_root_name_the_root():
    with _fails('invalid', "manifest <root>: unknown field(s) ['z']"):
        Reader({'z': 1}, '').done()


def test_a_field_that_was_read_is_known():
    r = Reader({'a': 1, 'b': 2}, 'x')
    r.get('a', int)
    r.number('b')
    r.done()
