"""Normalization and the state/action spaces as the manifest reads them: every bound at its
ends, masks, grippers, and each refusal's whole message."""

from __future__ import annotations

import pytest
from test_package_loader import _fails

from vla_ros.runtime.errors import PackageError
from vla_ros.runtime.package.manifest import (
    ActionSpec,
    GripperSpec,
    Normalization,
    SpaceSpec,
)
from vla_ros.runtime.package.parse_parts import parse_norm, parse_space
from vla_ros.runtime.package.reader import Reader

# parse_norm


def _norm(data: dict, length: int = 2) -> Normalization:
    return parse_norm(Reader(data, 'n'), length)


def test_identity_needs_no_statistics():
    assert _norm({'kind': 'identity'}) == Normalization(kind='identity', stats={}, clip=False,
                                                        mask=(), eps=1e-8)


def test_each_kind_needs_its_statistics():
    with _fails('invalid', 'manifest n.stats.max: is required but missing'):
        _norm({'kind': 'bounds', 'stats': {'min': [0, 0]}})
    with _fails('invalid', 'manifest n.stats.q01: is required but missing'):
        _norm({'kind': 'bounds_q99', 'stats': {'q99': [0, 0]}})
    with _fails('invalid', 'manifest n.stats.mean: is required but missing'):
        _norm({'kind': 'mean_std'})


def test_a_normalization_reads_every_field():
    n = _norm({'kind': 'bounds', 'stats': {'min': [-1, 0], 'max': [1, 2]}, 'clip': True,
               'mask': [True, False], 'eps': 0.0})
    assert n == Normalization(kind='bounds', stats={'min': (-1.0, 0.0), 'max': (1.0, 2.0)},
                              clip=True, mask=(True, False), eps=0.0)


def test_extra_statistics_are_kept_and_checked():
    n = _norm({'kind': 'bounds', 'stats': {'min': [0, 0], 'max': [1, 1], 'mean': [0.5, 0.5]}})
    assert n.stats == {'min': (0.0, 0.0), 'max': (1.0, 1.0), 'mean': (0.5, 0.5)}
    with _fails('inconsistent', 'manifest n.stats.mean: has 1 values, expected 2'):
        _norm({'kind': 'bounds', 'stats': {'min': [0, 0], 'max': [1, 1], 'mean': [0.5]}})


def test_an_unknown_normalization_kind_lists_the_kinds():
    with _fails('invalid', "manifest n.kind: 'minmax' is not one of ['identity', 'bounds', "
                "'bounds_q99', 'mean_std']"):
        _norm({'kind': 'minmax'})


@pytest.mark.parametrize('mask', [[True], [True, False, True], [1, 0], [True, None]])
def test_a_mask_needs_one_boolean_per_named_entry(mask):
    with _fails('inconsistent', f'manifest n.mask: expected 2 booleans (one per named entry), '
                f'got {mask!r}'):
        _norm({'kind': 'identity', 'mask': mask})


def test_an_empty_mask_normalizes_every_entry():
    assert _norm({'kind': 'identity', 'mask': []}).mask == ()


def test_a_long_mask_is_shortened_in_the_message():
    mask = [True] * 60
    with pytest.raises(PackageError) as info:
        _norm({'kind': 'identity', 'mask': mask})
    assert str(info.value).endswith(f'got {mask!r:.80}')


@pytest.mark.parametrize('eps,message', [(-1e-9, '-1e-09 must be >= 0.0'),
                                         (0.002, '0.002 must be <= 0.001')])
def test_eps_lies_in_0_to_1e_3(eps, message):
    with _fails('invalid', f'manifest n.eps: {message}'):
        _norm({'kind': 'identity', 'eps': eps})
    assert _norm({'kind': 'identity', 'eps': 1e-3}).eps == 1e-3


@pytest.mark.parametrize('std', [[1.0, 0.0], [-1.0, 1.0]])
def test_a_mean_std_needs_positive_stds(std):
    with _fails('invalid', 'manifest n.stats.std: every std must be > 0'):
        _norm({'kind': 'mean_std', 'stats': {'mean': [0, 0], 'std': std}})


def test_bounds_must_not_be_reversed_but_may_be_equal():
    with _fails('inconsistent', 'manifest n.stats: min > max at indices [1, 2]'):
        _norm({'kind': 'bounds', 'stats': {'min': [0, 2, 3], 'max': [1, 1, 2]}}, 3)
    n = _norm({'kind': 'bounds', 'stats': {'min': [1, 1], 'max': [1, 2]}})
    assert n.stats['min'] == (1.0, 1.0)


def test_quantile_bounds_must_not_be_reversed():
    with _fails('inconsistent', 'manifest n.stats: q01 > q99 at indices [0]'):
        _norm({'kind': 'bounds_q99', 'stats': {'q01': [1, 0], 'q99': [0, 0]}})
    n = _norm({'kind': 'bounds_q99', 'stats': {'q01': [0, 0], 'q99': [0, 1]}})
    assert n.stats == {'q01': (0.0, 0.0), 'q99': (0.0, 1.0)}


def test_a_normalization_refuses_unknown_fields():
    with _fails('invalid', "manifest n: unknown field(s) ['scale']"):
        _norm({'kind': 'identity', 'scale': 2})


# parse_space

IDENTITY = {'kind': 'identity'}


def _space(data: dict, action: bool) -> SpaceSpec:
    return parse_space(Reader(data, 'sp'), action=action)


def _action(**fields) -> ActionSpec:
    return _space({'names': ['x', 'g'], 'model_dim': 2, 'normalization': IDENTITY,
                   'chunk_len': 4, 'dt_s': 0.1, 'mode': 'absolute', **fields}, action=True)


def test_a_state_space_reads_names_width_and_normalization():
    s = _space({'names': ['a', 'b'], 'model_dim': 5, 'normalization': IDENTITY}, action=False)
    assert s == SpaceSpec(names=('a', 'b'), model_dim=5, normalization=Normalization())
    assert type(s) is SpaceSpec and s.dim == 2


def test_a_state_space_has_no_action_fields():
    with _fails('invalid', "manifest sp: unknown field(s) ['chunk_len']"):
        _space({'names': ['a'], 'model_dim': 1, 'normalization': IDENTITY, 'chunk_len': 4},
               action=False)


def test_a_space_must_name_an_entry():
    with _fails('invalid', 'manifest sp.names: must name at least one entry'):
        _space({'names': [], 'model_dim': 1, 'normalization': IDENTITY}, action=False)


def test_space_names_must_be_unique():
    with _fails('inconsistent', "manifest sp.names: name 'a' appears more than once"):
        _space({'names': ['a', 'b', 'a'], 'model_dim': 3, 'normalization': IDENTITY},
               action=False)


def test_the_model_width_covers_the_named_entries():
    assert _space({'names': ['a', 'b'], 'model_dim': 2, 'normalization': IDENTITY},
                  action=False).model_dim == 2
    with _fails('invalid', 'manifest sp.model_dim: 1 is outside >= 2'):
        _space({'names': ['a', 'b'], 'model_dim': 1, 'normalization': IDENTITY}, action=False)


def test_a_space_normalization_is_checked_against_the_names():
    with _fails('inconsistent', 'manifest sp.normalization.stats.min: has 1 values, expected 2'):
        _space({'names': ['a', 'b'], 'model_dim': 2,
                'normalization': {'kind': 'bounds', 'stats': {'min': [0], 'max': [1, 1]}}},
               action=False)


def test_an_action_space_reads_chunking_and_mode():
    a = _action(chunk_len=10_000, dt_s=10, mode='delta')
    assert a == ActionSpec(names=('x', 'g'), model_dim=2, normalization=Normalization(),
                           chunk_len=10_000, dt_s=10.0, mode='delta', gripper=None)
    assert _action(chunk_len=1).chunk_len == 1


@pytest.mark.parametrize('field,value,message', [
    ('chunk_len', 0, 'sp.chunk_len: 0 is outside [1, 10000]'),
    ('chunk_len', 10_001, 'sp.chunk_len: 10001 is outside [1, 10000]'),
    ('dt_s', 0.0, 'sp.dt_s: 0.0 must be > 0.0'),
    ('dt_s', 10.5, 'sp.dt_s: 10.5 must be <= 10.0'),
    ('mode', 'relative', "sp.mode: 'relative' is not one of ['absolute', 'delta']"),
])
def test_an_action_field_out_of_range_is_refused(field, value, message):
    with _fails('invalid', f'manifest {message}'):
        _action(**{field: value})


def test_a_gripper_reads_its_index_and_flags():
    assert _action(gripper={'index': 1}).gripper == GripperSpec(index=1, rescale=False,
                                                               binarize=False, invert=False)
    g = _action(gripper={'index': 0, 'rescale': True, 'binarize': True, 'invert': True}).gripper
    assert g == GripperSpec(index=0, rescale=True, binarize=True, invert=True)


@pytest.mark.parametrize('index', [-1, 2])
def test_a_gripper_index_must_name_an_entry(index):
    with _fails('invalid', f'manifest sp.gripper.index: {index} is outside [0, 1]'):
        _action(gripper={'index': index})


def test_a_gripper_refuses_unknown_fields():
    with _fails('invalid', "manifest sp.gripper: unknown field(s) ['open']"):
        _action(gripper={'index': 1, 'open': 1.0})


def test_an_action_space_refuses_unknown_fields():
    with _fails('invalid', "manifest sp: unknown field(s) ['horizon']"):
        _action(horizon=3)
