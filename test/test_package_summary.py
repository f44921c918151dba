"""The human-readable package summary (`vla-ros inspect`, `summary.describe`), checked line by
line on the tiny package and on a manifest that uses every optional part."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import manifest_dict

from vla_ros.runtime.package.loader import ModelPackage, load_package
from vla_ros.runtime.package.manifest import FileEntry
from vla_ros.runtime.package.parse import parse_manifest
from vla_ros.runtime.package.summary import describe

NORM = {'mean': [0.5, 0.5, 0.5], 'std': [0.25, 0.25, 0.25]}
SHA = '0' * 64


def _seg(name: str, layers: list[int], variants: dict) -> dict:
    return {'name': name, 'role': 'segment', 'layers': layers, 'inputs': [],
            'outputs': [{'name': 'hidden', 'dtype': 'float16', 'shape': ['batch', 8, 4]}],
            'variants': variants}


def _rich() -> dict:
    """A manifest with every part the summary shows: two cameras (one cropped, with steps,
    optional), a padded and clipped state of ten entries, exits with two threshold sets, flow
    settings, segments with two precisions and external data, and files of several sizes."""
    files = {'tokenizer.json': 100, 'graphs/s0.onnx': 1024, 'graphs/s0.data': 2048,
             'graphs/s0.fp16.onnx': 512, 'graphs/s0.fp16.data': 1024, 'graphs/s1.onnx': 10,
             'graphs/head.onnx': 5 * 1024 ** 2}
    return {
        'schema_version': 2, 'name': 'rich', 'family': 'a1',
        'head': {'type': 'flow_expert'},
        'cameras': [
            {'name': 'scene', 'height': 24, 'width': 32, 'channel_order': 'bgr',
             'resize': 'area', 'crop_scale': 0.9, 'norms': [NORM, NORM], 'required': False,
             'steps': [{'op': 'jpeg', 'quality': 95},
                       {'op': 'resize', 'height': 64, 'width': 64, 'method': 'area'}]},
            {'name': 'wrist', 'height': 16, 'width': 16, 'norms': [NORM]},
        ],
        'state': {'names': [f'j{i}' for i in range(10)], 'model_dim': 12,
                  'normalization': {'kind': 'bounds', 'clip': True,
                                    'stats': {'min': [0] * 10, 'max': [1] * 10}}},
        'action': {'names': ['x', 'g'], 'model_dim': 2, 'normalization': {'kind': 'identity'},
                   'chunk_len': 4, 'dt_s': 0.05, 'mode': 'delta'},
        'prompt': {'tokenizer_file': 'tokenizer.json', 'template': 'In: {instruction} Out:',
                   'max_length': 16, 'pad_id': 0},
        'exits': {'num_layers': 4, 'layers': [1, 3], 'default_threshold_set': 'fast',
                  'threshold_sets': [
                      {'name': 'slow', 'metric': 'max_abs', 'values': [-1.0],
                       'expected_compute_fraction': 1.0},
                      {'name': 'fast', 'metric': 'cosine', 'values': [0.123456],
                       'expected_compute_fraction': 0.5}]},
        'flow': {'noise_at': 1, 'noise': 'gaussian', 'num_steps': 10, 'truncated_steps': 3,
                 'warm_start': False},
        'graphs': [
            _seg('s0', [0, 2], {'fp32': {'file': 'graphs/s0.onnx',
                                         'data_files': ['graphs/s0.data']},
                                'fp16': {'file': 'graphs/s0.fp16.onnx',
                                         'data_files': ['graphs/s0.fp16.data']}}),
            _seg('s1', [2, 4], {'fp32': {'file': 'graphs/s1.onnx',
                                         'data_files': ['graphs/s1.data']}}),
            {'name': 'head', 'role': 'head',
             'inputs': [{'name': 'hidden', 'dtype': 'float16', 'shape': ['batch', 8, 4]},
                        {'name': 'state', 'dtype': 'float32', 'shape': [1, 12]}],
             'outputs': [{'name': 'actions', 'dtype': 'float32', 'shape': [1, 4, 2]},
                         {'name': 'gate', 'dtype': 'float32', 'shape': [1]}],
             'variants': {'fp32': {'file': 'graphs/head.onnx'}}},
        ],
        'embodiment': {'robot': 'arm', 'joints': [1, 2], 'limits': {'a': 1}, 'rate_hz': 10},
        'files': {rel: {'sha256': SHA, 'bytes': n} for rel, n in files.items()},
    }


def _describe(data: dict, root: Path = Path('/pkg')) -> list[str]:
    return describe(ModelPackage(root, parse_manifest(data))).split('\n')


def test_the_tiny_package_is_summarized_line_by_line(tiny_package):
    assert describe(load_package(tiny_package)).split('\n') == [
        f'tiny  ({tiny_package})',
        'family evo1, head flow_dit, schema v1, 2 files, 480 B',
        'embodiment: robot=test',
        'cameras:',
        '  scene: 16x16 rgb, bilinear, 1 norm stream(s)',
        'state: 2, normalization bounds',
        '  [joint1, joint2]',
        'action: 2, normalization mean_std',
        '  [joint1, joint2]',
        '  chunk 4 x 100 ms (0.4 s), absolute',
        'prompt: "{instruction}", max 8 tokens, tokenizer tokenizer.json',
        'exits: 2 of 2 layers at [0, 1]',
        '  no calibrated thresholds (runs full depth; see `vla-ros calibrate`)',
        'flow: noise at t=0 (uniform), 4 steps, 2 per exit when truncated, warm start True',
        'graphs:',
        '  head_step (head_step; fp32 120 B)',
        '    in: noisy_actions[1, 4, 2]',
        '    out: velocity[1, 4, 2]',
    ]


def test_every_optional_part_is_summarized_line_by_line():
    assert _describe(_rich()) == [
        'rich  (/pkg)',
        'family a1, head flow_expert, schema v2, 7 files, 5.0 MiB',
        'embodiment: robot=arm, rate_hz=10',
        'cameras:',
        '  scene: 32x24 bgr, area, center crop 0.9, steps jpeg + resize, 2 norm stream(s), '
        'optional',
        '  wrist: 16x16 rgb, bicubic, 1 norm stream(s)',
        'state: 10 padded to 12, normalization bounds (clipped)',
        '  [j0, j1, j2, j3, j4, j5, j6, j7, ... (+2)]',
        'action: 2, normalization identity',
        '  [x, g]',
        '  chunk 4 x 50 ms (0.2 s), delta',
        'prompt: "In: {instruction} Out:", max 16 tokens, tokenizer tokenizer.json',
        'exits: 2 of 4 layers at [1, 3]',
        '  slow: max_abs, expected compute 100%, thresholds [-1]',
        '  fast [default]: cosine, expected compute 50%, thresholds [0.123]',
        'flow: noise at t=1 (gaussian), 10 steps, 3 per exit when truncated, warm start False',
        'graphs:',
        '  s0 (segment layers 0-1; fp16 1.5 KiB, fp32 3.0 KiB)',
        '    in: -',
        '    out: hidden[\'batch\', 8, 4]',
        '  s1 (segment layers 2-3; fp32 10 B)',
        '    in: -',
        '    out: hidden[\'batch\', 8, 4]',
        '  head (head; fp32 5.0 MiB)',
        '    in: hidden[\'batch\', 8, 4], state[1, 12]',
        '    out: actions[1, 4, 2], gate[1]',
    ]


def test_a_package_without_embodiment_or_flow_has_neither_line():
    d = _rich()
    d['embodiment'] = {}
    d['head'] = {'type': 'mlp_regression'}
    del d['flow']
    lines = _describe(d)
    assert lines[2] == 'cameras:'
    assert not any(line.startswith(('embodiment', 'flow')) for line in lines)
    assert lines[lines.index('graphs:') - 1] == '  fast [default]: cosine, expected compute ' \
                                               '50%, thresholds [0.123]'


def test_threshold_sets_without_a_default_are_listed_plain():
    d = _rich()
    del d['exits']['default_threshold_set']
    d['exits']['threshold_sets'][0]['values'] = [0.5]
    lines = _describe(d)
    assert '  slow: max_abs, expected compute 100%, thresholds [0.5]' in lines
    assert '  fast: cosine, expected compute 50%, thresholds [0.123]' in lines
    assert not any('no calibrated thresholds' in line for line in lines)


def test_every_threshold_of_a_set_is_listed(manifest):
    manifest['exits'] = {'num_layers': 3, 'layers': [0, 1, 2], 'threshold_sets': [
        {'name': 'a', 'metric': 'mean_abs', 'values': [0.1, 0.25],
         'expected_compute_fraction': 0.875}]}
    assert '  a: mean_abs, expected compute 88%, thresholds [0.1, 0.25]' in _describe(manifest)


@pytest.mark.parametrize('count,listed', [
    (8, '  [j0, j1, j2, j3, j4, j5, j6, j7]'),
    (9, '  [j0, j1, j2, j3, j4, j5, j6, j7, ... (+1)]'),
])
def test_up_to_eight_names_are_listed(count, listed):
    d = _rich()
    d['state'] = {'names': [f'j{i}' for i in range(count)], 'model_dim': 12,
                  'normalization': {'kind': 'mean_std', 'clip': False,
                                    'stats': {'mean': [0] * count, 'std': [1] * count}}}
    lines = _describe(d)
    i = lines.index(f'state: {count} padded to 12, normalization mean_std')
    assert lines[i + 1] == listed


def test_a_full_crop_shows_no_crop():
    d = _rich()
    d['cameras'][0].update(crop_scale=1.0, steps=[], required=True)
    assert '  scene: 32x24 bgr, area, 2 norm stream(s)' in _describe(d)


def test_a_camera_with_steps_but_no_crop_shows_its_steps():
    d = _rich()
    d['cameras'][0].update(crop_scale=1.0, steps=[{'op': 'jpeg', 'quality': 95}])
    assert '  scene: 32x24 bgr, area, steps jpeg, 2 norm stream(s), optional' in _describe(d)


def _header(total_bytes: int) -> str:
    m = parse_manifest(copy.deepcopy(manifest_dict()))
    m = replace(m, files={'a.data': FileEntry(SHA, total_bytes)})
    return describe(ModelPackage(Path('/p'), m)).split('\n')[1]


@pytest.mark.parametrize('total,shown', [
    (0, '0 B'), (1023, '1023 B'), (1024, '1.0 KiB'), (1536, '1.5 KiB'),
    (1024 ** 2 - 1, '1024.0 KiB'), (1024 ** 2, '1.0 MiB'), (1024 ** 3 - 1, '1024.0 MiB'),
    (3 * 1024 ** 3 // 2, '1.5 GiB'), (1024 ** 4, '1024.0 GiB'), (3 * 1024 ** 4, '3072.0 GiB'),
])
def test_sizes_are_shown_in_the_largest_unit_below_1024_up_to_gib(total, shown):
    assert _header(total) == f'family evo1, head flow_dit, schema v1, 1 files, {shown}'
