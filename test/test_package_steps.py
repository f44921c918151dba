"""Camera slots and their image steps, normalization and the state/action spaces as the
manifest parser reads them (`parse_parts.py`): what each accepts exactly, and the error each
refusal gives."""

from __future__ import annotations

import pytest
from test_package_loader import _fails

from vla_ros.runtime.package.manifest import (
    CameraSpec,
    ChannelNorm,
)
from vla_ros.runtime.package.parse_parts import parse_camera, parse_step
from vla_ros.runtime.package.reader import Reader

NORM = {'mean': [0.5, 0.5, 0.5], 'std': [0.25, 0.25, 0.25]}


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
