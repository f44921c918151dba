"""Manifest parsing (`parse.py`) and cross-field checks (`consistency.py`): every refusal
names the field, the value and what is allowed; defaults and conversions are what the
runtime reads."""

from __future__ import annotations

import pytest
from test_package_loader import _fails

from vla_ros.runtime.package.manifest import (
    ExitSpec,
    FlowSpec,
    HeadSpec,
)
from vla_ros.runtime.package.parse import parse_manifest

SHA = 'a' * 64
ROLES = "('segment', 'head_segment', 'segment_chain')"


def _tensor(name: str, shape: list, dtype: str = 'float32') -> dict:
    return {'name': name, 'dtype': dtype, 'shape': shape}


def _graph(name: str, role: str, inputs=(), outputs=None, layers=None, **variants) -> dict:
    g = {'name': name, 'role': role, 'inputs': list(inputs),
         'outputs': list(outputs or [_tensor('h', [1])]),
         'variants': variants or {'fp32': {'file': f'graphs/{name}.onnx'}}}
    if layers is not None:
        g['layers'] = layers
    return g


def _segments(manifest: dict, *spans, role: str = 'segment', layers: list[int] | None = None):
    """A backbone up to the highest span end, tiled by graphs s0, s1, ... of `role`."""
    manifest['exits'] = {'num_layers': max(end for _, end in spans),
                         'layers': layers or [end - 1 for _, end in spans]}
    manifest['graphs'] += [_graph(f's{i}', role, layers=list(span))
                           for i, span in enumerate(spans)]


# schema version, root object


def test_a_later_schema_version_says_how_to_read_it(manifest):
    manifest['schema_version'] = 3
    with _fails('schema_version', 'manifest schema_version 3 is not supported: this vla_ros '
                'reads versions [1, 2]. Re-export the package with this vla_ros, or install '
                'the vla_ros release that wrote it.'):
        parse_manifest(manifest)


@pytest.mark.parametrize('version', [1, 2])
def test_both_schema_versions_are_read(manifest, version):
    manifest['schema_version'] = version
    assert parse_manifest(manifest).schema_version == version


def test_a_manifest_must_be_an_object():
    with _fails('invalid', 'manifest : expected an object, got list'):
        parse_manifest([])


def test_unknown_top_level_fields_are_refused(manifest):
    manifest['extra'] = 1
    with _fails('invalid', "manifest <root>: unknown field(s) ['extra']"):
        parse_manifest(manifest)


def test_the_top_level_parts_are_read(manifest):
    manifest['provenance'] = {'exported_by': 'test'}
    manifest['head']['config'] = {'depth': 2}
    m = parse_manifest(manifest)
    assert (m.name, m.family, m.head) == ('tiny', 'evo1', HeadSpec('flow_dit', {'depth': 2}))
    assert m.embodiment == {'robot': 'test'} and m.provenance == {'exported_by': 'test'}
    assert m.files == {}


def test_optional_top_level_parts_default_to_empty(manifest):
    del manifest['embodiment']
    del manifest['head']['config']
    m = parse_manifest(manifest)
    assert m.embodiment == {} and m.provenance == {} and m.head.config == {}


def test_family_and_head_type_name_the_allowed_values(manifest):
    manifest['family'] = 'pi0'
    with _fails('invalid', "manifest family: 'pi0' is not one of ['evo1', 'a1', 'vla_adapter', "
                "'edgevla']"):
        parse_manifest(manifest)
    manifest['family'] = 'a1'
    manifest['head']['type'] = 'diffusion'
    with _fails('invalid', "manifest head.type: 'diffusion' is not one of ['flow_dit', "
                "'flow_expert', 'mlp_regression', 'bridge', 'nar_tokens']"):
        parse_manifest(manifest)


def test_a_head_refuses_unknown_fields(manifest):
    manifest['head']['layers'] = 2
    with _fails('invalid', "manifest head: unknown field(s) ['layers']"):
        parse_manifest(manifest)


# cameras


def test_a_vision_graph_needs_a_camera(manifest):
    manifest['cameras'] = []
    manifest['graphs'].append(_graph('vision', 'vision'))
    with _fails('invalid', 'manifest cameras: a package with a vision graph needs a camera '
                'slot'):
        parse_manifest(manifest)


def test_a_package_without_vision_needs_no_camera(manifest):
    manifest['cameras'] = []
    assert parse_manifest(manifest).cameras == ()


def test_a_package_without_cameras_still_needs_its_graphs(manifest):
    manifest['cameras'] = []
    del manifest['graphs']
    with _fails('invalid', 'manifest graphs: is required but missing'):
        parse_manifest(manifest)


def test_camera_names_are_unique(manifest):
    manifest['cameras'].append(dict(manifest['cameras'][0]))
    with _fails('inconsistent', "manifest cameras: name 'scene' appears more than once"):
        parse_manifest(manifest)


# prompt


def test_prompt_defaults(manifest):
    p = parse_manifest(manifest).prompt
    assert (p.lowercase, p.padding_side, p.layout) == (False, 'right', ({'kind': 'text'},))
    assert (p.tokenizer_file, p.template, p.max_length, p.pad_id) == (
        'tokenizer.json', '{instruction}', 8, 0)


def test_prompt_fields_are_read(manifest):
    manifest['prompt'].update(lowercase=True, padding_side='left', template='Q: {instruction}',
                              max_length=32768, pad_id=7)
    p = parse_manifest(manifest).prompt
    assert (p.lowercase, p.padding_side, p.template, p.max_length, p.pad_id) == (
        True, 'left', 'Q: {instruction}', 32768, 7)


@pytest.mark.parametrize('field,value,message', [
    ('max_length', 0, 'prompt.max_length: 0 is outside [1, 32768]'),
    ('max_length', 32769, 'prompt.max_length: 32769 is outside [1, 32768]'),
    ('pad_id', -1, 'prompt.pad_id: -1 is outside >= 0'),
    ('padding_side', 'both', "prompt.padding_side: 'both' is not one of ['right', 'left']"),
    ('template', 'Q: {task}', 'prompt.template: must contain {instruction}'),
    ('lowercase', 'yes', "prompt.lowercase: expected bool, got str 'yes'"),
    ('stop', 1, "prompt: unknown field(s) ['stop']"),
])
def test_a_bad_prompt_field_is_refused(manifest, field, value, message):
    manifest['prompt'][field] = value
    with _fails('invalid', f'manifest {message}'):
        parse_manifest(manifest)


def test_the_prompt_template_is_required(manifest):
    del manifest['prompt']['template']
    with _fails('invalid', 'manifest prompt.template: is required but missing'):
        parse_manifest(manifest)


def _layout(manifest: dict, *items) -> tuple:
    manifest['prompt']['layout'] = list(items)
    for g in manifest['graphs']:  # the sequence length is checked against token inputs only
        assert not any(t['name'] in ('input_ids', 'attention_mask') for t in g['inputs'])
    return parse_manifest(manifest).prompt.layout


def test_layout_items_are_read(manifest):
    layout = _layout(manifest, {'kind': 'tokens', 'ids': [1, 0]},
                     {'kind': 'image', 'camera': 'scene', 'id': 0, 'count': 1},
                     {'kind': 'image', 'camera': 'scene', 'id': 9, 'count': 8, 'cols': 4,
                      'col_id': 0},
                     {'kind': 'text'},
                     {'kind': 'tokens', 'ids': [2], 'repeat': 3})
    assert layout == ({'kind': 'tokens', 'ids': [1, 0], 'repeat': 1},
                      {'kind': 'image', 'camera': 'scene', 'id': 0, 'count': 1},
                      {'kind': 'image', 'camera': 'scene', 'id': 9, 'count': 8, 'cols': 4,
                       'col_id': 0},
                      {'kind': 'text'},
                      {'kind': 'tokens', 'ids': [2], 'repeat': 3})


@pytest.mark.parametrize('item,message', [
    ({'kind': 'audio'}, "prompt.layout[1].kind: 'audio' is not one of ['text', 'image', "
                        "'tokens']"),
    ({'kind': 'image', 'camera': 'wrist', 'id': 1, 'count': 4},
     "prompt.layout[1].camera: 'wrist' is not one of ['scene']"),
    ({'kind': 'image', 'camera': 'scene', 'id': -1, 'count': 4},
     'prompt.layout[1].id: -1 is outside >= 0'),
    ({'kind': 'image', 'camera': 'scene', 'id': 1, 'count': 0},
     'prompt.layout[1].count: 0 is outside >= 1'),
    ({'kind': 'image', 'camera': 'scene', 'id': 1, 'count': 4, 'cols': 0, 'col_id': 2},
     'prompt.layout[1].cols: 0 is outside >= 1'),
    ({'kind': 'image', 'camera': 'scene', 'id': 1, 'count': 4, 'cols': 2, 'col_id': -1},
     'prompt.layout[1].col_id: -1 is outside >= 0'),
    ({'kind': 'image', 'camera': 'scene', 'id': 1, 'count': 4, 'cols': 2},
     'prompt.layout[1].col_id: is required but missing'),
    ({'kind': 'image', 'camera': 'scene', 'id': 1, 'count': 8, 'cols': 3, 'col_id': 2},
     'prompt.layout[1].cols: 3 does not divide count 8'),
    ({'kind': 'image', 'camera': 'scene', 'id': 1, 'count': 4, 'ids': [1]},
     "prompt.layout[1]: unknown field(s) ['ids']"),
    ({'kind': 'tokens', 'ids': []}, 'prompt.layout[1].ids: expected non-negative token ids, '
                                    'got []'),
    ({'kind': 'tokens', 'ids': [1, -1]}, 'prompt.layout[1].ids: expected non-negative token '
                                         'ids, got [1, -1]'),
    ({'kind': 'tokens', 'ids': [True]}, 'prompt.layout[1].ids: expected non-negative token '
                                        'ids, got [True]'),
    ({'kind': 'tokens', 'ids': ['1']}, "prompt.layout[1].ids: expected non-negative token "
                                       "ids, got ['1']"),
    ({'kind': 'tokens', 'ids': [1], 'repeat': 0}, 'prompt.layout[1].repeat: 0 is outside >= 1'),
    ({'kind': 'text', 'max_length': 4}, "prompt.layout[1]: unknown field(s) ['max_length']"),
])
def test_a_bad_layout_item_is_refused_by_index(manifest, item, message):
    with _fails('invalid', f'manifest {message}'):
        _layout(manifest, {'kind': 'text'}, item)


@pytest.mark.parametrize('items', [[], [{'kind': 'text'}, {'kind': 'text'}],
                                   [{'kind': 'tokens', 'ids': [1]}]])
def test_the_layout_needs_exactly_one_text_item(manifest, items):
    with _fails('invalid', 'manifest prompt.layout: needs exactly one text item'):
        _layout(manifest, *items)


# flow


def test_flow_defaults(manifest):
    assert parse_manifest(manifest).flow == FlowSpec(noise_at=0, noise='uniform', num_steps=4,
                                                     truncated_steps=2, warm_start=True,
                                                     action_mask=False)


def test_flow_fields_are_read(manifest):
    manifest['flow'] = {'noise_at': 1, 'noise': 'gaussian', 'num_steps': 1000,
                        'truncated_steps': 1000, 'warm_start': False, 'action_mask': True}
    assert parse_manifest(manifest).flow == FlowSpec(1, 'gaussian', 1000, 1000, False, True)


@pytest.mark.parametrize('field,value,message', [
    ('noise_at', 2, 'flow.noise_at: 2 is outside [0, 1]'),
    ('noise_at', -1, 'flow.noise_at: -1 is outside [0, 1]'),
    ('noise', 'normal', "flow.noise: 'normal' is not one of ['uniform', 'gaussian']"),
    ('num_steps', 0, 'flow.num_steps: 0 is outside [1, 1000]'),
    ('num_steps', 1001, 'flow.num_steps: 1001 is outside [1, 1000]'),
    ('truncated_steps', 0, 'flow.truncated_steps: 0 is outside [1, 1000]'),
    ('truncated_steps', 1001, 'flow.truncated_steps: 1001 is outside [1, 1000]'),
    ('warm_start', 0, 'flow.warm_start: expected bool, got int 0'),
    ('action_mask', 1, 'flow.action_mask: expected bool, got int 1'),
    ('sigma', 1, "flow: unknown field(s) ['sigma']"),
])
def test_a_bad_flow_field_is_refused(manifest, field, value, message):
    manifest['flow'][field] = value
    with _fails('invalid', f'manifest {message}'):
        parse_manifest(manifest)


def test_a_flow_head_needs_flow_settings_and_another_head_takes_none(manifest):
    flow = manifest.pop('flow')
    with _fails('inconsistent', "manifest flow: head type 'flow_dit' needs flow settings"):
        parse_manifest(manifest)
    manifest['head']['type'] = 'bridge'
    assert parse_manifest(manifest).flow is None
    manifest['flow'] = flow
    with _fails('inconsistent', "manifest flow: head type 'bridge' takes no flow settings"):
        parse_manifest(manifest)


# exits and threshold sets


def test_exits_are_read(manifest):
    manifest['exits'] = {'num_layers': 1000, 'layers': [0, 500, 999]}
    e = parse_manifest(manifest).exits
    assert e == ExitSpec(num_layers=1000, layers=(0, 500, 999), threshold_sets=(),
                         default_threshold_set=None)


@pytest.mark.parametrize('exits,kind,message', [
    ({'num_layers': 0, 'layers': [0]}, 'invalid', 'exits.num_layers: 0 is outside [1, 1000]'),
    ({'num_layers': 1001, 'layers': [1000]}, 'invalid',
     'exits.num_layers: 1001 is outside [1, 1000]'),
    ({'num_layers': 2, 'layers': []}, 'invalid',
     'exits.layers: expected a non-empty list of layer indices, got ()'),
    ({'num_layers': 2, 'layers': [True]}, 'invalid',
     'exits.layers: expected a non-empty list of layer indices, got (True,)'),
    ({'num_layers': 2, 'layers': [0, 1.0]}, 'invalid',
     'exits.layers: expected a non-empty list of layer indices, got (0, 1.0)'),
    ({'num_layers': 2, 'layers': [1, 1]}, 'invalid',
     'exits.layers: must be strictly increasing, got [1, 1]'),
    ({'num_layers': 3, 'layers': [2, 0]}, 'invalid',
     'exits.layers: must be strictly increasing, got [2, 0]'),
    ({'num_layers': 2, 'layers': [-1, 1]}, 'inconsistent',
     'exits.layers: must lie in [0, 1] and end at the last layer 1; got [-1, 1]'),
    ({'num_layers': 3, 'layers': [0, 1]}, 'inconsistent',
     'exits.layers: must lie in [0, 2] and end at the last layer 2; got [0, 1]'),
    ({'num_layers': 2, 'layers': [1], 'depth': 2}, 'invalid',
     "exits: unknown field(s) ['depth']"),
])
def test_bad_exits_are_refused(manifest, exits, kind, message):
    manifest['exits'] = exits
    with _fails(kind, f'manifest {message}'):
        parse_manifest(manifest)
