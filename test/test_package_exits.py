"""Manifest cross-field checks past the prompt: exits and threshold sets, graphs and segment
chains, files, tiling, and the tensor shapes against cameras, state, prompt and actions; each
refusal's whole message."""

from __future__ import annotations

import pytest
from test_package_loader import _fails
from test_package_parse import ROLES, SHA, _graph, _segments, _tensor

from vla_ros.runtime.errors import PackageError
from vla_ros.runtime.package.consistency import check_consistency
from vla_ros.runtime.package.manifest import (
    FileEntry,
    GraphFile,
    TensorSpec,
    ThresholdSet,
)
from vla_ros.runtime.package.parse import parse_manifest


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
