"""Manifest parsing (`parse.py`) and cross-field checks (`consistency.py`): every refusal
names the field, the value and what is allowed; defaults and conversions are what the
runtime reads."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_package_loader import _fails

from vla_ros.runtime.errors import PackageError
from vla_ros.runtime.package.consistency import check_consistency
from vla_ros.runtime.package.manifest import (
    ExitSpec,
    FileEntry,
    FlowSpec,
    GraphFile,
    HeadSpec,
    TensorSpec,
    ThresholdSet,
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


def _set(**fields) -> dict:
    return {'name': 'fast', 'metric': 'cosine', 'values': [0.5],
            'expected_compute_fraction': 0.5, **fields}


def _sets(manifest: dict, *sets, default=...) -> tuple:
    manifest['exits']['threshold_sets'] = list(sets)
    if default is not ...:
        manifest['exits']['default_threshold_set'] = default
    return parse_manifest(manifest).exits.threshold_sets


def test_a_threshold_set_is_read_with_its_defaults(manifest):
    assert _sets(manifest, _set()) == (ThresholdSet(
        name='fast', metric='cosine', values=(0.5,), expected_compute_fraction=0.5,
        calibration={}, dims='named'),)


def test_a_threshold_set_reads_every_field(manifest):
    ts = _sets(manifest, _set(dims='all', values=[-1], expected_compute_fraction=1,
                              calibration={'samples': 8}))[0]
    assert (ts.dims, ts.values, ts.expected_compute_fraction, ts.calibration) == (
        'all', (-1.0,), 1.0, {'samples': 8})


@pytest.mark.parametrize('calibration,metric', [
    ({'l2': 'rms'}, 'l2'), ({}, 'l2_norm'), ({'l2': 'norm'}, 'l2_norm')])
def test_an_l2_set_calibrated_before_rms_reads_as_the_euclidean_norm(manifest, calibration,
                                                                    metric):
    ts = _sets(manifest, _set(metric='l2', calibration=calibration))[0]
    assert ts.metric == metric and ts.calibration == calibration


def test_other_metrics_read_unchanged(manifest):
    metrics = ('cosine', 'l2_norm', 'mean_abs', 'max_abs')
    sets = _sets(manifest, *[_set(name=m, metric=m, calibration={'l2': 'norm'})
                             for m in metrics])
    assert tuple(s.metric for s in sets) == metrics


@pytest.mark.parametrize('fields,kind,message', [
    ({'metric': 'l1'}, 'invalid', "exits.threshold_sets[0].metric: 'l1' is not one of "
                                  "['cosine', 'l2', 'l2_norm', 'mean_abs', 'max_abs']"),
    ({'dims': 'some'}, 'invalid', "exits.threshold_sets[0].dims: 'some' is not one of "
                                  "['named', 'all']"),
    ({'expected_compute_fraction': 0}, 'invalid',
     'exits.threshold_sets[0].expected_compute_fraction: 0.0 must be > 0.0'),
    ({'expected_compute_fraction': 1.5}, 'invalid',
     'exits.threshold_sets[0].expected_compute_fraction: 1.5 must be <= 1.0'),
    ({'values': []}, 'inconsistent', 'exits.threshold_sets[0].values: has 0 values, '
                                     'expected 1'),
    ({'calibration': []}, 'invalid', 'exits.threshold_sets[0].calibration: expected dict, '
                                     'got list []'),
    ({'source': 'x'}, 'invalid', "exits.threshold_sets[0]: unknown field(s) ['source']"),
])
def test_a_bad_threshold_set_is_refused(manifest, fields, kind, message):
    with _fails(kind, f'manifest {message}'):
        _sets(manifest, _set(**fields))


def test_threshold_set_names_are_unique(manifest):
    with _fails('inconsistent', "manifest exits.threshold_sets: name 'fast' appears more than "
                'once'):
        _sets(manifest, _set(), _set(values=[0.1]))


def test_the_default_set_must_be_one_of_the_sets(manifest):
    with _fails('inconsistent', "manifest exits.default_threshold_set: 'slow' is not among the "
                "threshold sets ['fast', 'mid']"):
        _sets(manifest, _set(), _set(name='mid'), default='slow')
    with _fails('invalid', 'manifest exits.default_threshold_set: expected str or NoneType, '
                'got int 1'):
        _sets(manifest, _set(), default=1)
    _sets(manifest, _set(), default=None)
    assert parse_manifest(manifest).exits.default_threshold_set is None
    _sets(manifest, _set(), _set(name='mid'), default='mid')
    assert parse_manifest(manifest).threshold_set().name == 'mid'


def test_each_threshold_set_has_one_value_per_exit_but_the_last():
    # parse checks the count as it reads; the consistency check guards manifests built in code.
    from conftest import manifest_dict

    m = parse_manifest(manifest_dict())
    bad = m.with_threshold_sets((ThresholdSet('two', 'cosine', (0.1, 0.2), 0.5),), None)
    with _fails('inconsistent', 'manifest exits.threshold_sets[two]: 2 values for 2 exits'):
        check_consistency(bad)
    check_consistency(m.with_threshold_sets((ThresholdSet('one', 'cosine', (0.1,), 0.5),),
                                            'one'))


# graphs and tensors


def test_a_graph_is_read_with_its_tensors_and_variants(manifest):
    manifest['graphs'][0]['inputs'].append(_tensor('mask', ['batch', 4], 'bool'))
    manifest['graphs'][0]['variants'] = {
        'fp32': {'file': 'graphs/h.onnx', 'data_files': ['graphs/h.data']},
        'fp16': {'file': 'graphs/h16.onnx'}}
    g = parse_manifest(manifest).graphs[0]
    assert g.inputs == (TensorSpec('noisy_actions', 'float32', (1, 4, 2)),
                        TensorSpec('mask', 'bool', ('batch', 4)))
    assert g.outputs == (TensorSpec('velocity', 'float32', (1, 4, 2)),)
    assert g.variants == {'fp32': GraphFile('graphs/h.onnx', ('graphs/h.data',)),
                          'fp16': GraphFile('graphs/h16.onnx', ())}
    assert g.layers is None and g.role == 'head_step'


@pytest.mark.parametrize('dim', [0, -2, True, 1.5, None, [1]])
def test_a_tensor_dimension_is_a_positive_int_or_a_symbol(manifest, dim):
    manifest['graphs'][0]['inputs'][0]['shape'] = [1, dim, 2]
    with _fails('invalid', 'manifest graphs[0].inputs[0].shape[1]: expected a positive int or '
                f'a symbol name, got {dim!r}'):
        parse_manifest(manifest)


def test_a_tensor_of_size_one_and_symbolic_dims_are_read(manifest):
    manifest['graphs'][0]['inputs'][0]['shape'] = ['batch', 4, 2]
    manifest['graphs'][0]['inputs'].append(_tensor('flag', [1], 'int64'))
    g = parse_manifest(manifest).graphs[0]
    assert g.inputs[0].shape == ('batch', 4, 2) and g.inputs[1].shape == (1,)


def test_a_tensor_refuses_an_unknown_dtype_or_field(manifest):
    manifest['graphs'][0]['outputs'][0]['dtype'] = 'float64'
    with _fails('invalid', "manifest graphs[0].outputs[0].dtype: 'float64' is not one of "
                "['float32', 'float16', 'int64', 'int32', 'bool', 'uint8']"):
        parse_manifest(manifest)
    manifest['graphs'][0]['outputs'][0].update(dtype='float32', layout='nchw')
    with _fails('invalid', "manifest graphs[0].outputs[0]: unknown field(s) ['layout']"):
        parse_manifest(manifest)


def test_a_graph_needs_an_output(manifest):
    manifest['graphs'][0]['outputs'] = []
    with _fails('invalid', 'manifest graphs[0].outputs: a graph needs at least one output'):
        parse_manifest(manifest)


@pytest.mark.parametrize('side', ['inputs', 'outputs'])
def test_tensor_names_of_a_graph_side_are_unique(manifest, side):
    g = manifest['graphs'][0]
    g[side].append(dict(g[side][0]))
    with _fails('inconsistent', f"manifest graphs[0].{side}: name '{g[side][0]['name']}' "
                'appears more than once'):
        parse_manifest(manifest)


def test_a_variant_precision_must_be_known(manifest):
    manifest['graphs'][0]['variants']['int8'] = {'file': 'g8.onnx'}
    with _fails('invalid', "manifest graphs[0].variants: precision 'int8' is not one of "
                "['fp32', 'fp16']"):
        parse_manifest(manifest)


def test_every_graph_needs_an_fp32_variant(manifest):
    manifest['graphs'][0]['variants'] = {'fp16': {'file': 'g16.onnx'}}
    with _fails('invalid', 'manifest graphs[0].variants: every graph needs an fp32 variant'):
        parse_manifest(manifest)


def test_a_variant_refuses_unknown_fields_and_empty_data_files(manifest):
    manifest['graphs'][0]['variants']['fp32']['sha256'] = SHA
    with _fails('invalid', "manifest graphs[0].variants.fp32: unknown field(s) ['sha256']"):
        parse_manifest(manifest)
    del manifest['graphs'][0]['variants']['fp32']['sha256']
    manifest['graphs'][0]['variants']['fp32']['data_files'] = ['']
    with _fails('invalid', "manifest graphs[0].variants.fp32.data_files[0]: expected a "
                "non-empty string, got ''"):
        parse_manifest(manifest)


def test_a_graph_refuses_unknown_fields(manifest):
    manifest['graphs'][0]['opset'] = 20
    with _fails('invalid', "manifest graphs[0]: unknown field(s) ['opset']"):
        parse_manifest(manifest)


@pytest.mark.parametrize('layers', [[0], [0, 1, 2], [0, True], [-1, 2], [1, 1], [2, 1],
                                    [0.0, 2], 'all'])
def test_graph_layers_are_a_start_below_an_end(manifest, layers):
    _segments(manifest, (0, 2))
    manifest['graphs'][1]['layers'] = layers
    if isinstance(layers, str):
        message = "manifest graphs[1].layers: expected list, got str 'all'"
    else:
        message = ('manifest graphs[1].layers: expected [start, end) with 0 <= start < end, '
                   f'got {layers!r}')
    with _fails('invalid', message):
        parse_manifest(manifest)


def test_only_ranged_roles_name_layers(manifest):
    manifest['graphs'][0]['layers'] = [0, 2]
    with _fails('invalid', f'manifest graphs[0].layers: graphs of roles {ROLES}, and only '
                'those, name the layers [start, end) they run'):
        parse_manifest(manifest)
    del manifest['graphs'][0]['layers']
    manifest['graphs'].append(_graph('s0', 'segment'))
    with _fails('invalid', f'manifest graphs[1].layers: graphs of roles {ROLES}, and only '
                'those, name the layers [start, end) they run'):
        parse_manifest(manifest)


def test_a_segment_chain_needs_schema_version_2(manifest):
    _segments(manifest, (0, 1), (1, 2))
    manifest['graphs'].append(_graph('chain', 'segment_chain', layers=[0, 2]))
    with _fails('invalid', "manifest graphs[chain].role: role 'segment_chain' needs "
                'schema_version 2, the manifest says 1'):
        parse_manifest(manifest)
    manifest['schema_version'] = 2
    assert parse_manifest(manifest).graph('chain').layers == (0, 2)


# files


def test_file_entries_are_read(manifest):
    manifest['files'] = {'a.txt': {'sha256': SHA, 'bytes': 0},
                         'b.onnx': {'sha256': '0123456789abcdef' * 4, 'bytes': 12}}
    assert parse_manifest(manifest).files == {'a.txt': FileEntry(SHA, 0),
                                              'b.onnx': FileEntry('0123456789abcdef' * 4, 12)}


@pytest.mark.parametrize('sha', ['a' * 63, 'a' * 65, 'A' * 64, 'g' * 64, 'X' * 64,
                                 ' ' + 'a' * 63])
def test_a_file_hash_is_64_lowercase_hex_digits(manifest, sha):
    manifest['files'] = {'a.txt': {'sha256': sha, 'bytes': 1}}
    with _fails('invalid', "manifest files['a.txt'].sha256: expected 64 lowercase hex digits"):
        parse_manifest(manifest)


def test_a_file_entry_needs_a_size_and_nothing_else(manifest):
    manifest['files'] = {'a.txt': {'sha256': SHA, 'bytes': -1}}
    with _fails('invalid', "manifest files['a.txt'].bytes: -1 is outside >= 0"):
        parse_manifest(manifest)
    manifest['files'] = {'a.txt': {'sha256': SHA, 'bytes': 1, 'mtime': 0}}
    with _fails('invalid', "manifest files['a.txt']: unknown field(s) ['mtime']"):
        parse_manifest(manifest)
    manifest['files'] = {'a.txt': {'sha256': SHA}}
    with _fails('invalid', "manifest files['a.txt'].bytes: is required but missing"):
        parse_manifest(manifest)


# consistency


def test_graph_names_are_unique(manifest):
    manifest['graphs'].append(dict(manifest['graphs'][0]))
    with _fails('inconsistent', "manifest graphs: name 'head_step' appears more than once"):
        parse_manifest(manifest)


def test_a_package_needs_a_graph(manifest):
    manifest['graphs'] = []
    with _fails('invalid', 'manifest graphs: a package needs at least one graph'):
        parse_manifest(manifest)


@pytest.mark.parametrize('role', ['segment', 'head_segment'])
def test_layered_graphs_tile_the_backbone_in_any_order(manifest, role):
    _segments(manifest, (2, 4), (0, 2), role=role, layers=[1, 3])
    m = parse_manifest(manifest)
    assert [g.layers for g in m.graphs_with_role(role)] == [(2, 4), (0, 2)]


@pytest.mark.parametrize('role', ['segment', 'head_segment'])
def test_a_gap_between_layered_graphs_is_refused(manifest, role):
    _segments(manifest, (0, 2), (3, 4), role=role, layers=[1, 3])
    with _fails('inconsistent', f'manifest graphs[s1].layers: starts at 3; {role} graphs must '
                'tile layers 0..3 without gaps or overlap (expected start 2)'):
        parse_manifest(manifest)


def test_an_overlap_or_a_late_start_is_refused(manifest):
    _segments(manifest, (0, 3), (2, 4), layers=[2, 3])
    with _fails('inconsistent', 'manifest graphs[s1].layers: starts at 2; segment graphs must '
                'tile layers 0..3 without gaps or overlap (expected start 3)'):
        parse_manifest(manifest)
    manifest['graphs'] = manifest['graphs'][:1] + [_graph('s0', 'segment', layers=[1, 4])]
    with _fails('inconsistent', 'manifest graphs[s0].layers: starts at 1; segment graphs must '
                'tile layers 0..3 without gaps or overlap (expected start 0)'):
        parse_manifest(manifest)


def test_layered_graphs_must_reach_the_last_layer(manifest):
    _segments(manifest, (0, 2))
    manifest['exits'] = {'num_layers': 3, 'layers': [2]}
    with _fails('inconsistent', 'manifest graphs: segment graphs end at layer 2, the backbone '
                'has 3 layers'):
        parse_manifest(manifest)


def test_every_exit_ends_a_layered_graph(manifest):
    _segments(manifest, (0, 3), (3, 4), layers=[1, 3])
    with _fails('inconsistent', 'manifest exits.layers: exit layers [1] do not end a segment '
                'graph; their ends are [2, 3]'):
        parse_manifest(manifest)


def test_a_single_segment_names_itself_when_an_exit_falls_inside_it(manifest):
    _segments(manifest, (0, 2), layers=[0, 1])
    with _fails('inconsistent', 'manifest exits.layers: exit layers [0] do not end a segment '
                'graph; their ends are [1]'):
        parse_manifest(manifest)


def test_a_segment_chain_may_span_the_only_segment(manifest):
    manifest['schema_version'] = 2
    _segments(manifest, (0, 2))
    manifest['graphs'].append(_graph('chain', 'segment_chain', layers=[0, 2]))
    assert parse_manifest(manifest).graph('chain').layers == (0, 2)


def test_a_segment_chain_spans_whole_segments(manifest):
    manifest['schema_version'] = 2
    _segments(manifest, (0, 1), (1, 3), (3, 4))
    manifest['graphs'].append(_graph('chain', 'segment_chain', layers=[1, 4]))
    assert parse_manifest(manifest).graph('chain').layers == (1, 4)
    manifest['graphs'][-1]['layers'] = [0, 2]
    with _fails('inconsistent', 'manifest graphs[chain].layers: [0, 2] must start and end '
                'where segments do ([0, 1, 3, 4])'):
        parse_manifest(manifest)
    manifest['graphs'][-1]['layers'] = [2, 3]
    with pytest.raises(PackageError, match=r'\[2, 3\] must start and end where segments do'):
        parse_manifest(manifest)


def _io(manifest: dict, *tensors, side: str = 'inputs') -> None:
    manifest['graphs'][0][side] += [dict(t) for t in tensors]


def test_an_image_input_must_name_a_camera(manifest):
    _io(manifest, _tensor('image.wrist', [1, 3, 16, 16]))
    with _fails('inconsistent', "manifest graphs[head_step].image.wrist: names no camera slot; "
                "slots are ['scene']"):
        parse_manifest(manifest)


def test_an_image_input_matches_its_camera(manifest):
    _io(manifest, _tensor('image.scene', ['batch', 3, 16, 16]),
        _tensor('image_tokens', [1, 7]))  # not an image of a camera: any shape
    _io(manifest, _tensor('image.scene', ['b', 'c', 'h', 'w']), side='outputs')
    parse_manifest(manifest)


@pytest.mark.parametrize('shape,message', [
    ([1, 3, 15, 16], "[1, 3, 15, 16]: dimension -2 is 15, but camera 'scene' height is 16"),
    ([1, 6, 16, 16], "[1, 6, 16, 16]: dimension -3 is 6, but camera 'scene' channels is 3"),
    ([1, 3, 16, 17], "[1, 3, 16, 17]: dimension -1 is 17, but camera 'scene' width is 16"),
])
def test_an_image_of_the_wrong_size_names_the_dimension(manifest, shape, message):
    _io(manifest, _tensor('image.scene', shape))
    with _fails('inconsistent', f'manifest graphs[head_step].image.scene.shape: {message}'):
        parse_manifest(manifest)


@pytest.mark.parametrize('shape,what', [([16], "camera 'scene' height"),
                                        ([16, 16], "camera 'scene' channels")])
def test_an_image_of_too_low_rank_is_refused(manifest, shape, what):
    _io(manifest, _tensor('image.scene', shape))
    with _fails('inconsistent', f'manifest graphs[head_step].image.scene: rank {len(shape)} is '
                f'too small for {what}'):
        parse_manifest(manifest)


def test_the_state_input_matches_the_state_width(manifest):
    _io(manifest, _tensor('state', [1, 3]))
    with _fails('inconsistent', 'manifest graphs[head_step].state.shape: [1, 3]: dimension -1 '
                'is 3, but state.model_dim is 2'):
        parse_manifest(manifest)
    manifest['graphs'][0]['inputs'][-1]['shape'] = [2]
    parse_manifest(manifest)


@pytest.mark.parametrize('name', ['input_ids', 'attention_mask'])
def test_token_inputs_match_the_prompt_length(manifest, name):
    _io(manifest, _tensor(name, [1, 9], 'int64'))
    with _fails('inconsistent', f'manifest graphs[head_step].{name}.shape: [1, 9]: dimension -1 '
                'is 9, but the prompt layout length is 8'):
        parse_manifest(manifest)
    manifest['prompt']['layout'] = [{'kind': 'tokens', 'ids': [1]}, {'kind': 'text'}]
    parse_manifest(manifest)


@pytest.mark.parametrize('name', ['actions', 'noisy_actions', 'velocity'])
def test_action_tensors_match_the_chunk_and_the_action_width(manifest, name):
    manifest['graphs'][0]['inputs'] = []
    manifest['graphs'][0]['outputs'] = [_tensor(name, [1, 4, 3])]
    with _fails('inconsistent', f'manifest graphs[head_step].{name}.shape: [1, 4, 3]: dimension '
                '-1 is 3, but action.model_dim is 2'):
        parse_manifest(manifest)
    manifest['graphs'][0]['outputs'] = [_tensor(name, [1, 5, 2])]
    with _fails('inconsistent', f'manifest graphs[head_step].{name}.shape: [1, 5, 2]: dimension '
                '-2 is 5, but action.chunk_len is 4'):
        parse_manifest(manifest)
    manifest['graphs'][0]['outputs'] = [_tensor(name, [2])]
    with _fails('inconsistent', f'manifest graphs[head_step].{name}: rank 1 is too small for '
                'action.chunk_len'):
        parse_manifest(manifest)


def test_the_consistency_check_reads_only_the_manifest_it_is_given(manifest):
    m = parse_manifest(manifest)
    check_consistency(m)
    with _fails('inconsistent', "manifest flow: head type 'flow_dit' needs flow settings"):
        check_consistency(replace(m, flow=None))
    with _fails('invalid', 'manifest graphs: a package needs at least one graph'):
        check_consistency(replace(m, graphs=()))
