"""Camera slots and their image steps, normalization and the state/action spaces as the
manifest parser reads them (`parse_parts.py`): what each accepts exactly, and the error each
refusal gives."""

from __future__ import annotations

import contextlib
import re

import pytest

from vla_ros.runtime.errors import PackageError
from vla_ros.runtime.package.manifest import (
    ActionSpec,
    CameraSpec,
    ChannelNorm,
    GripperSpec,
    Normalization,
    SpaceSpec,
)
from vla_ros.runtime.package.parse_parts import parse_camera, parse_norm, parse_space, parse_step
from vla_ros.runtime.package.reader import Reader

NORM = {'mean': [0.5, 0.5, 0.5], 'std': [0.25, 0.25, 0.25]}


@contextlib.contextmanager
def _fails(kind: str, message: str):
    """A PackageError of `kind` whose whole message is `message`."""
    with pytest.raises(PackageError, match=f'^{re.escape(message)}$') as info:
        yield info
    assert info.value.kind == kind


def _step(data: dict) -> dict:
    return parse_step(Reader(data, 's'))


def _camera(**fields) -> CameraSpec:
    return parse_camera(Reader({'name': 'cam', 'height': 32, 'width': 32, 'norms': [NORM],
                                **fields}, 'c'))


# parse_step: one image step each


def test_a_jpeg_step_reads_its_quality():
    assert _step({'op': 'jpeg', 'quality': 95}) == {'op': 'jpeg', 'quality': 95}
    assert _step({'op': 'jpeg', 'quality': 1})['quality'] == 1
    assert _step({'op': 'jpeg', 'quality': 100})['quality'] == 100


@pytest.mark.parametrize('quality', [0, 101])
def test_a_jpeg_quality_outside_1_to_100_is_refused(quality):
    with _fails('invalid', f'manifest s.quality: {quality} is outside [1, 100]'):
        _step({'op': 'jpeg', 'quality': quality})


def test_a_resize_step_reads_its_size_and_method():
    assert _step({'op': 'resize', 'height': 8, 'width': 4096, 'method': 'pil_lanczos'}) == {
        'op': 'resize', 'height': 8, 'width': 4096, 'method': 'pil_lanczos'}


@pytest.mark.parametrize('field,value,message', [
    ('height', 7, 's.height: 7 is outside [8, 4096]'),
    ('height', 4097, 's.height: 4097 is outside [8, 4096]'),
    ('width', 7, 's.width: 7 is outside [8, 4096]'),
    ('width', 4097, 's.width: 4097 is outside [8, 4096]'),
])
def test_a_resize_size_outside_8_to_4096_is_refused(field, value, message):
    data = {'op': 'resize', 'height': 16, 'width': 16, 'method': 'area', field: value}
    with _fails('invalid', f'manifest {message}'):
        _step(data)


def test_a_resize_method_must_be_a_resize_mode():
    with _fails('invalid', "manifest s.method: 'tf_bilinear' is not one of ['bicubic', "
                "'bilinear', 'area', 'lanczos', 'nearest', 'pil_bicubic', 'pil_bilinear', "
                "'pil_lanczos', 'tf_lanczos3']"):
        _step({'op': 'resize', 'height': 16, 'width': 16, 'method': 'tf_bilinear'})


def test_a_resize_pad_step_reads_size_patch_fill_and_method():
    step = _step({'op': 'resize_pad', 'size': 336, 'patch': 14, 'fill': 0.5,
                  'method': 'torch_bilinear'})
    assert step == {'op': 'resize_pad', 'size': 336, 'patch': 14, 'fill': 0.5,
                    'method': 'torch_bilinear'}
    assert type(step['fill']) is float


def test_resize_pad_bounds_admit_their_ends():
    step = _step({'op': 'resize_pad', 'size': 8, 'patch': 1, 'fill': 0,
                  'method': 'torch_bilinear'})
    assert (step['size'], step['patch'], step['fill']) == (8, 1, 0.0)
    step = _step({'op': 'resize_pad', 'size': 4096, 'patch': 4096, 'fill': 1,
                  'method': 'torch_bilinear'})
    assert (step['size'], step['patch'], step['fill']) == (4096, 4096, 1.0)


@pytest.mark.parametrize('field,value,message', [
    ('size', 7, 's.size: 7 is outside [8, 4096]'),
    ('size', 4097, 's.size: 4097 is outside [8, 4096]'),
    ('patch', 0, 's.patch: 0 is outside [1, 4096]'),
    ('patch', 4097, 's.patch: 4097 is outside [1, 4096]'),
    ('fill', -0.1, 's.fill: -0.1 must be >= 0.0'),
    ('fill', 1.1, 's.fill: 1.1 must be <= 1.0'),
    ('method', 'bilinear', "s.method: 'bilinear' is not one of ['torch_bilinear']"),
])
def test_a_resize_pad_parameter_out_of_range_is_refused(field, value, message):
    data = {'op': 'resize_pad', 'size': 16, 'patch': 4, 'fill': 0.5, 'method': 'torch_bilinear',
            field: value}
    with _fails('invalid', f'manifest {message}'):
        _step(data)


def test_a_resize_pad_patch_must_divide_its_size():
    with _fails('invalid', 'manifest s.patch: 3 does not divide size 16'):
        _step({'op': 'resize_pad', 'size': 16, 'patch': 3, 'fill': 0.0,
               'method': 'torch_bilinear'})


def test_a_center_crop_step_reads_its_area_and_method():
    step = _step({'op': 'center_crop', 'area': 0.9, 'method': 'tf_bilinear'})
    assert step == {'op': 'center_crop', 'area': 0.9, 'method': 'tf_bilinear'}
    assert _step({'op': 'center_crop', 'area': 1, 'method': 'tf_bilinear'})['area'] == 1.0


@pytest.mark.parametrize('area,message', [(0.0, '0.0 must be > 0.0'),
                                          (1.5, '1.5 must be <= 1.0')])
def test_a_center_crop_area_outside_0_to_1_is_refused(area, message):
    with _fails('invalid', f'manifest s.area: {message}'):
        _step({'op': 'center_crop', 'area': area, 'method': 'tf_bilinear'})


def test_a_center_crop_method_must_be_tf_bilinear():
    with _fails('invalid', "manifest s.method: 'area' is not one of ['tf_bilinear']"):
        _step({'op': 'center_crop', 'area': 0.5, 'method': 'area'})


def test_an_unknown_step_lists_the_known_ones():
    with _fails('invalid', "manifest s.op: 'blur' is not one of ['jpeg', 'resize', "
                "'center_crop', 'resize_pad']"):
        _step({'op': 'blur'})


@pytest.mark.parametrize('data,unknown', [
    ({'op': 'jpeg', 'quality': 90, 'height': 8}, ['height']),
    ({'op': 'resize', 'height': 16, 'width': 16, 'method': 'area', 'quality': 90}, ['quality']),
    ({'op': 'resize_pad', 'size': 16, 'patch': 4, 'fill': 0.0, 'method': 'torch_bilinear',
      'width': 8}, ['width']),
    ({'op': 'center_crop', 'area': 0.5, 'method': 'tf_bilinear', 'size': 8}, ['size']),
])
def test_a_parameter_of_another_step_is_refused(data, unknown):
    with _fails('invalid', f'manifest s: unknown field(s) {unknown}'):
        _step(data)


# parse_camera


def test_a_camera_reads_with_its_defaults():
    cam = _camera()
    assert cam == CameraSpec(name='cam', height=32, width=32, channel_order='rgb',
                             resize='bicubic', crop_scale=1.0,
                             norms=(ChannelNorm((0.5,) * 3, (0.25,) * 3),), required=True,
                             steps=(), letterbox=False, missing='zeros')
    assert cam.norms[0].fill is None and cam.channels == 3


def test_a_camera_reads_every_field():
    cam = _camera(channel_order='bgr', resize='nearest', crop_scale=0.9, required=False,
                  letterbox=True, missing='black',
                  norms=[dict(NORM, fill=[0, 128, 255]), NORM],
                  steps=[{'op': 'jpeg', 'quality': 95}])
    assert (cam.channel_order, cam.resize, cam.crop_scale) == ('bgr', 'nearest', 0.9)
    assert (cam.required, cam.letterbox, cam.missing) == (False, True, 'black')
    assert cam.norms[0].fill == (0, 128, 255) and cam.norms[1].fill is None
    assert cam.channels == 6
    assert cam.steps == ({'op': 'jpeg', 'quality': 95},)


@pytest.mark.parametrize('fill', [[0, 0], [0, 0, 0, 0], [0, 0, 256], [-1, 0, 0],
                                  [0, 1.0, 0], [True, 0, 0]])
def test_a_letterbox_fill_must_be_three_bytes(fill):
    with _fails('invalid', f'manifest c.norms[0].fill: expected 3 ints in [0, 255], got {fill}'):
        _camera(norms=[dict(NORM, fill=fill)])


def test_a_letterbox_fill_of_null_is_no_fill():
    assert _camera(norms=[dict(NORM, fill=None)]).norms[0].fill is None


@pytest.mark.parametrize('std', [[0.25, 0.0, 0.25], [0.25, 0.25, -0.1]])
def test_a_camera_std_must_be_positive(std):
    with _fails('invalid', 'manifest c.norms[1].std: every std must be > 0'):
        _camera(norms=[NORM, {'mean': [0.5] * 3, 'std': std}])


def test_a_camera_norm_needs_three_means_and_stds():
    with _fails('inconsistent', 'manifest c.norms[0].mean: has 2 values, expected 3'):
        _camera(norms=[{'mean': [0.5] * 2, 'std': [0.2] * 3}])
    with _fails('inconsistent', 'manifest c.norms[0].std: has 4 values, expected 3'):
        _camera(norms=[{'mean': [0.5] * 3, 'std': [0.2] * 4}])


def test_a_camera_norm_refuses_unknown_fields():
    with _fails('invalid', "manifest c.norms[0]: unknown field(s) ['scale']"):
        _camera(norms=[dict(NORM, scale=2)])


def test_a_camera_needs_a_normalization_stream():
    with _fails('invalid', 'manifest c.norms: needs at least one normalization stream'):
        _camera(norms=[])


@pytest.mark.parametrize('field,value,message', [
    ('height', 7, 'c.height: 7 is outside [8, 4096]'),
    ('height', 4097, 'c.height: 4097 is outside [8, 4096]'),
    ('width', 7, 'c.width: 7 is outside [8, 4096]'),
    ('width', 4097, 'c.width: 4097 is outside [8, 4096]'),
    ('crop_scale', 0.0, 'c.crop_scale: 0.0 must be > 0.0'),
    ('crop_scale', 1.01, 'c.crop_scale: 1.01 must be <= 1.0'),
    ('channel_order', 'rgba', "c.channel_order: 'rgba' is not one of ['rgb', 'bgr']"),
    ('missing', 'noise', "c.missing: 'noise' is not one of ['zeros', 'black']"),
    ('required', 1, 'c.required: expected bool, got int 1'),
    ('letterbox', 'yes', "c.letterbox: expected bool, got str 'yes'"),
])
def test_a_camera_field_out_of_range_is_refused(field, value, message):
    with _fails('invalid', f'manifest {message}'):
        _camera(**{field: value})


def test_a_camera_size_admits_its_bounds():
    assert (_camera(height=8, width=4096).height, _camera(height=4096, width=8).width) == (8, 8)


def test_a_camera_refuses_unknown_fields():
    with _fails('invalid', "manifest c: unknown field(s) ['fps']"):
        _camera(fps=30)


def test_camera_steps_are_read_in_order_with_their_paths():
    cam = _camera(steps=[{'op': 'jpeg', 'quality': 90},
                         {'op': 'resize', 'height': 64, 'width': 64, 'method': 'area'}])
    assert [s['op'] for s in cam.steps] == ['jpeg', 'resize']
    with _fails('invalid', 'manifest c.steps[1].quality: 0 is outside [1, 100]'):
        _camera(steps=[{'op': 'jpeg', 'quality': 90}, {'op': 'jpeg', 'quality': 0}])


PAD = {'op': 'resize_pad', 'size': 32, 'patch': 8, 'fill': 0.5, 'method': 'torch_bilinear'}
PAD_RULE = ('manifest c.steps: a resize_pad step must be the last step, with height = width = '
            'its size, no crop_scale and no letterbox')


def test_a_resize_pad_step_may_end_the_steps_at_the_camera_size():
    cam = _camera(steps=[{'op': 'jpeg', 'quality': 90}, PAD])
    assert cam.steps[-1]['op'] == 'resize_pad'
    assert _camera(steps=[PAD]).steps == (PAD,)


@pytest.mark.parametrize('fields', [
    {'steps': [PAD, {'op': 'jpeg', 'quality': 90}]},
    {'steps': [PAD, PAD]},
    {'steps': [PAD], 'crop_scale': 0.9},
    {'steps': [PAD], 'letterbox': True},
    {'steps': [PAD], 'height': 16},
    {'steps': [PAD], 'width': 16},
    {'steps': [dict(PAD, size=64)]},
])
def test_a_resize_pad_step_must_be_last_and_match_the_camera(fields):
    with _fails('invalid', PAD_RULE):
        _camera(**fields)


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
