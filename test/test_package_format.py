"""The model-package format: a valid package loads; every kind of broken package is rejected
with a specific, actionable error."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
from conftest import edit_manifest

from vla_ros.runtime.errors import PackageError
from vla_ros.runtime.package.loader import load_package, read_manifest, write_manifest
from vla_ros.runtime.package.manifest import SCHEMA_VERSION
from vla_ros.runtime.package.parse import parse_manifest


def _rejects(root: Path, kind: str, match: str) -> PackageError:
    with pytest.raises(PackageError, match=match) as info:
        load_package(root)
    assert info.value.kind == kind, f'{info.value.kind}: {info.value}'
    return info.value


def test_valid_package_loads_with_hashes(tiny_package):
    pkg = load_package(tiny_package)
    m = pkg.manifest
    assert m.name == 'tiny' and m.schema_version == 1  # an older package reads as it is
    assert set(m.files) == {'graphs/head_step.onnx', 'tokenizer.json'}
    assert pkg.graph_path('head_step') == tiny_package / 'graphs' / 'head_step.onnx'
    assert m.action.chunk_len == 4 and m.state.dim == 2


def test_manifest_round_trips_through_json(tiny_package):
    m = load_package(tiny_package).manifest
    assert parse_manifest(json.loads(json.dumps(m.to_dict()))) == m


def test_missing_file_is_rejected(tiny_package):
    (tiny_package / 'tokenizer.json').unlink()
    _rejects(tiny_package, 'missing_file', "'tokenizer.json' is listed")


def test_missing_manifest_says_how_to_make_one(tmp_path):
    _rejects(tmp_path, 'missing_file', 'vla-ros export')


def test_extra_file_is_rejected(tiny_package):
    (tiny_package / 'notes.txt').write_text('hello')
    _rejects(tiny_package, 'extra_file', 'notes.txt')


def test_changed_content_fails_hash_check(tiny_package):
    path = tiny_package / 'tokenizer.json'
    data = bytearray(path.read_bytes())
    data[10] ^= 0x01  # same size, different content
    path.write_bytes(bytes(data))
    _rejects(tiny_package, 'hash_mismatch', 'sha256')


def test_truncated_file_fails_size_check_even_without_hashing(tiny_package):
    path = tiny_package / 'graphs' / 'head_step.onnx'
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(PackageError, match='bytes') as info:
        load_package(tiny_package, verify_hashes=False)
    assert info.value.kind == 'hash_mismatch'


def _as_chain(version):
    def edit(d):
        d['schema_version'] = version
        d['graphs'][0].update(role='segment_chain', layers=[0, 2])
    return edit


def test_a_segment_chain_needs_schema_version_2(tiny_package):
    edit_manifest(tiny_package, _as_chain(1))
    _rejects(tiny_package, 'invalid', 'needs schema_version 2')


def test_a_segment_chain_must_start_and_end_where_segments_do(tiny_package):
    edit_manifest(tiny_package, _as_chain(2))
    _rejects(tiny_package, 'inconsistent', 'where segments do')


def test_unknown_schema_version_is_rejected(tiny_package):
    edit_manifest(tiny_package, lambda d: d.update(schema_version=SCHEMA_VERSION + 1))
    _rejects(tiny_package, 'schema_version', 'Re-export')


@pytest.mark.parametrize('bad_path', ['../outside.onnx', '/etc/passwd', 'graphs/../../x.onnx',
                                      './graphs/head_step.onnx'])
def test_path_escaping_the_package_is_rejected(tiny_package, bad_path):
    def point_elsewhere(d):
        d['graphs'][0]['variants']['fp32']['file'] = bad_path

    edit_manifest(tiny_package, point_elsewhere)
    _rejects(tiny_package, 'path_escape', 'relative path')


def test_symlink_out_of_the_package_is_rejected(tiny_package, tmp_path):
    outside = tmp_path / 'outside.onnx'
    target = tiny_package / 'graphs' / 'head_step.onnx'
    outside.write_bytes(target.read_bytes())
    target.unlink()
    os.symlink(outside, target)
    _rejects(tiny_package, 'path_escape', 'outside the package')


def test_pickle_files_are_rejected_by_suffix(tiny_package):
    (tiny_package / 'weights.pt').write_bytes(pickle.dumps({'w': 1}))
    error = _rejects(tiny_package, 'unsafe_file', 'pickled code')
    assert 'weights.pt' in str(error)


def test_pickle_disguised_as_json_is_rejected(tiny_package):
    manifest = load_package(tiny_package).manifest
    (tiny_package / 'tokenizer.json').write_bytes(pickle.dumps({'w': 1}, protocol=4))
    with pytest.raises(PackageError, match='holds pickled data') as info:
        write_manifest(tiny_package, manifest)
    assert info.value.kind == 'unsafe_file'


def test_unknown_file_types_are_rejected(tiny_package):
    (tiny_package / 'run.sh').write_text('rm -rf /')
    _rejects(tiny_package, 'unsafe_file', 'not allowed')


@pytest.mark.parametrize('value', ['NaN', 'Infinity', '-Infinity'])
def test_non_finite_normalization_stats_are_rejected(tiny_package, value):
    text = (tiny_package / 'manifest.json').read_text()
    text = text.replace('"max": [\n     1.0,', f'"max": [\n     {value},', 1)
    assert value in text
    (tiny_package / 'manifest.json').write_text(text)
    _rejects(tiny_package, 'non_finite', r'state\.normalization\.stats\.max\[0\]')


def test_stats_length_must_match_names(manifest):
    manifest['action']['normalization']['stats']['mean'] = [0.0]
    with pytest.raises(PackageError, match='has 1 values, expected 2') as info:
        parse_manifest(manifest)
    assert info.value.kind == 'inconsistent'


def test_graph_shape_must_match_action_space(manifest):
    manifest['graphs'][0]['outputs'][0]['shape'] = [1, 4, 3]
    with pytest.raises(PackageError, match='action.model_dim is 2') as info:
        parse_manifest(manifest)
    assert info.value.kind == 'inconsistent'


def test_graph_shape_must_match_chunk_length(manifest):
    manifest['graphs'][0]['inputs'][0]['shape'] = [1, 5, 2]
    with pytest.raises(PackageError, match='chunk_len is 4'):
        parse_manifest(manifest)


def test_image_input_must_match_camera_slot(manifest):
    manifest['graphs'][0]['inputs'].append(
        {'name': 'image.scene', 'dtype': 'float32', 'shape': [1, 3, 16, 20]})
    with pytest.raises(PackageError, match="camera 'scene' width is 16"):
        parse_manifest(manifest)


def test_segments_must_tile_the_backbone_at_exits(manifest):
    seg = {'role': 'segment', 'inputs': [], 'variants': {'fp32': {'file': 'g.onnx'}},
           'outputs': [{'name': 'hidden', 'dtype': 'float32', 'shape': [1, 8, 4]}]}
    manifest['exits'] = {'num_layers': 4, 'layers': [1, 3]}
    manifest['graphs'] += [dict(seg, name='s0', layers=[0, 1]), dict(seg, name='s1',
                                                                      layers=[1, 4])]
    with pytest.raises(PackageError, match=r'exit layers \[1\] do not end a segment'):
        parse_manifest(manifest)
    manifest['graphs'][1]['layers'] = [0, 2]
    manifest['graphs'][2]['layers'] = [3, 4]
    with pytest.raises(PackageError, match='without gaps'):
        parse_manifest(manifest)


def test_exit_layers_must_end_at_the_last_layer(manifest):
    manifest['exits']['layers'] = [0]
    with pytest.raises(PackageError, match='end at the last layer 1'):
        parse_manifest(manifest)


def test_threshold_set_needs_one_value_per_non_final_exit(manifest):
    manifest['exits']['threshold_sets'] = [{'name': 'half', 'metric': 'cosine',
                                            'values': [0.1, 0.2],
                                            'expected_compute_fraction': 0.5}]
    with pytest.raises(PackageError, match='has 2 values, expected 1'):
        parse_manifest(manifest)


def test_unknown_fields_are_rejected_not_ignored(manifest):
    manifest['action']['chunk_length'] = 4
    with pytest.raises(PackageError, match=r"unknown field\(s\) \['chunk_length'\]"):
        parse_manifest(manifest)


def test_flow_settings_required_for_flow_heads(manifest):
    del manifest['flow']
    with pytest.raises(PackageError, match='needs flow settings'):
        parse_manifest(manifest)


def test_bad_enum_value_names_allowed_values(manifest):
    manifest['cameras'][0]['resize'] = 'magic'
    with pytest.raises(PackageError, match=r"cameras\[0\]\.resize: 'magic' is not one of"):
        parse_manifest(manifest)


def test_not_json_is_rejected(tiny_package):
    (tiny_package / 'manifest.json').write_text('{"schema_version": 1,')
    _rejects(tiny_package, 'invalid', 'not valid JSON')


def test_writer_refuses_a_manifest_the_loader_would_reject(tiny_package, manifest):
    manifest['graphs'][0]['variants']['fp32']['file'] = 'graphs/absent.onnx'
    with pytest.raises(PackageError, match='not listed'):
        write_manifest(tiny_package, parse_manifest(manifest))


def test_an_oversized_manifest_is_refused_before_parsing(tiny_package):
    from vla_ros.runtime.package.loader import MAX_MANIFEST_BYTES

    path = tiny_package / 'manifest.json'
    data = json.loads(path.read_text())
    data['provenance'] = {'padding': 'x' * MAX_MANIFEST_BYTES}
    path.write_text(json.dumps(data))
    with pytest.raises(PackageError, match='at most'):
        read_manifest(tiny_package)


def _rewrite_graph(root: Path, nodes, initializers=(), functions=(), opsets=()) -> None:
    """Replaces the tiny package's graph (same I/O) and rehashes the manifest."""
    from conftest import manifest_dict
    from onnx import TensorProto, helper, save

    x = helper.make_tensor_value_info('noisy_actions', TensorProto.FLOAT, [1, 4, 2])
    y = helper.make_tensor_value_info('velocity', TensorProto.FLOAT, [1, 4, 2])
    graph = helper.make_graph(nodes, 'head_step', [x], [y], initializer=list(initializers))
    model = helper.make_model(graph, functions=list(functions),
                              opset_imports=[helper.make_opsetid('', 20), *opsets])
    save(model, root / 'graphs' / 'head_step.onnx')
    write_manifest(root, parse_manifest(manifest_dict()))


@pytest.mark.parametrize('domain', ['com.example.custom', 'com.microsoft'])
def test_a_graph_with_a_custom_operator_domain_is_refused(tiny_package, domain):
    from onnx import helper

    _rewrite_graph(tiny_package, [helper.make_node('Gelu', ['noisy_actions'], ['velocity'],
                                                   domain=domain)],
                   opsets=[helper.make_opsetid(domain, 1)])
    err = _rejects(tiny_package, 'unsafe_file', 'custom operator domain')
    assert "graph 'head_step'" in str(err) and repr(domain) in str(err)


def test_a_custom_domain_inside_a_subgraph_is_refused(tiny_package):
    from onnx import TensorProto, helper

    inner = helper.make_graph(
        [helper.make_node('MyOp', ['noisy_actions'], ['out'], domain='com.example.custom')],
        'then', [], [helper.make_tensor_value_info('out', TensorProto.FLOAT, [1, 4, 2])])
    other = helper.make_graph(
        [helper.make_node('Neg', ['noisy_actions'], ['out'])],
        'else', [], [helper.make_tensor_value_info('out', TensorProto.FLOAT, [1, 4, 2])])
    cond = helper.make_tensor('cond', TensorProto.BOOL, [], [True])
    _rewrite_graph(tiny_package, [helper.make_node('If', ['cond'], ['velocity'],
                                                   then_branch=inner, else_branch=other)],
                   initializers=[cond])
    _rejects(tiny_package, 'unsafe_file', "domain 'com.example.custom'")


def test_a_function_the_model_defines_itself_is_allowed(tiny_package):
    from onnx import helper

    fn = helper.make_function('pkg.local', 'Negate', ['x'], ['y'],
                              [helper.make_node('Neg', ['x'], ['y'])],
                              [helper.make_opsetid('', 20)])
    _rewrite_graph(tiny_package, [helper.make_node('Negate', ['noisy_actions'], ['velocity'],
                                                   domain='pkg.local')],
                   functions=[fn], opsets=[helper.make_opsetid('pkg.local', 1)])
    assert load_package(tiny_package).manifest.graphs[0].name == 'head_step'


@pytest.mark.parametrize('location,kind', [
    ('/etc/passwd', 'path_escape'), ('../../outside.data', 'path_escape'),
    ('head_step.onnx.data', 'unsafe_file')])  # relative, but not a listed data file
def test_external_data_outside_the_graphs_listed_files_is_refused(tiny_package, location,
                                                                   kind):
    from onnx import TensorProto, helper

    w = helper.make_tensor('w', TensorProto.FLOAT, [1], [1.0])
    w.data_location = TensorProto.EXTERNAL
    entry = w.external_data.add()
    entry.key, entry.value = 'location', location
    _rewrite_graph(tiny_package, [helper.make_node('Mul', ['noisy_actions', 'w'],
                                                   ['velocity'])], initializers=[w])
    err = _rejects(tiny_package, kind, 'external data' if kind == 'unsafe_file' else 'path')
    assert "graph 'head_step'" in str(err) and location in str(err)


def test_shipped_models_pass_the_graph_checks():
    root = Path(__file__).resolve().parents[1] / 'models'
    for name in ('default', 'default-fr3', 'flow-xarm6'):
        assert load_package(root / name).manifest.graphs
