"""The manifest's own methods (`manifest.py`): graph and threshold-set lookups with errors that
list what exists, the files it references, serialization that leaves out unset optional
parts, and the derived sizes (channels, dims, the prompt's sequence length)."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from vla_ros.runtime.package.manifest import (
    CameraSpec,
    ChannelNorm,
    GraphFile,
    Manifest,
    PromptSpec,
    SpaceSpec,
    ThresholdSet,
)
from vla_ros.runtime.package.parse import parse_manifest

SETS = (ThresholdSet(name='fast', metric='cosine', values=(0.2,),
                     expected_compute_fraction=0.5),
        ThresholdSet(name='slow', metric='l2', values=(0.1,), expected_compute_fraction=0.9))


def _m(manifest: dict) -> Manifest:
    return parse_manifest(manifest)


def _with_sets(manifest: dict, default: str | None) -> Manifest:
    return _m(manifest).with_threshold_sets(SETS, default)


def test_a_graph_is_found_by_name(manifest):
    m = _m(manifest)
    assert m.graph('head_step') is m.graphs[0]


def test_an_unknown_graph_lists_the_graphs(manifest):
    with pytest.raises(KeyError, match=re.escape(
            "package 'tiny' has no graph 'head'; graphs: ['head_step']")):
        _m(manifest).graph('head')


def test_graphs_are_selected_by_role(manifest):
    m = _m(manifest)
    assert m.graphs_with_role('head_step') == (m.graphs[0],)
    assert m.graphs_with_role('vision') == ()


def test_the_default_threshold_set_is_used_when_none_is_named(manifest):
    m = _with_sets(manifest, 'slow')
    assert m.threshold_set() is SETS[1]
    assert m.threshold_set(None) is SETS[1]
    assert m.threshold_set('fast') is SETS[0]


def test_without_a_default_no_set_is_chosen_but_a_named_one_is_found(manifest):
    m = _with_sets(manifest, None)
    assert m.threshold_set() is None
    assert m.threshold_set('slow') is SETS[1]


def test_an_unknown_threshold_set_lists_the_sets(manifest):
    with pytest.raises(KeyError, match=re.escape(
            "package 'tiny' has no threshold set 'medium'; sets: ['fast', 'slow']")):
        _with_sets(manifest, 'fast').threshold_set('medium')


def test_with_threshold_sets_changes_only_the_sets_and_the_default(manifest):
    m = _m(manifest)
    new = m.with_threshold_sets(SETS, 'fast')
    assert new.exits.threshold_sets == SETS and new.exits.default_threshold_set == 'fast'
    assert replace(new, exits=m.exits) == m
    assert (new.exits.num_layers, new.exits.layers) == (m.exits.num_layers, m.exits.layers)
    cleared = new.with_threshold_sets((), None)
    assert cleared.exits == m.exits


def test_referenced_files_are_the_tokenizer_and_every_variants_files(manifest):
    m = _m(manifest)
    g = m.graphs[0]
    g = replace(g, variants={
        'fp32': GraphFile('graphs/a.onnx', ('graphs/a.data', 'graphs/b.data')),
        'fp16': GraphFile('graphs/a16.onnx', ('graphs/a16.data',))})
    m = replace(m, graphs=(g,))
    assert m.referenced_files() == {'tokenizer.json', 'graphs/a.onnx', 'graphs/a.data',
                                    'graphs/b.data', 'graphs/a16.onnx', 'graphs/a16.data'}


def test_serialization_leaves_out_unset_optional_parts(manifest):
    d = _m(manifest).to_dict()
    assert 'layers' not in d['graphs'][0]
    assert 'gripper' not in d['action']
    assert 'fill' not in d['cameras'][0]['norms'][0]
    assert d['flow'] == {'noise_at': 0, 'noise': 'uniform', 'num_steps': 4,
                         'truncated_steps': 2, 'warm_start': True, 'action_mask': False}
    manifest['head']['type'] = 'bridge'
    del manifest['flow']
    assert 'flow' not in _m(manifest).to_dict()


def test_serialization_keeps_set_optional_parts(manifest):
    manifest['schema_version'] = 2
    manifest['cameras'][0]['norms'].append({'mean': [0.5] * 3, 'std': [0.5] * 3,
                                            'fill': [1, 2, 3]})
    manifest['action']['gripper'] = {'index': 1, 'invert': True}
    manifest['exits'] = {'num_layers': 2, 'layers': [1]}
    manifest['graphs'].append({
        'name': 's', 'role': 'segment', 'layers': [0, 2], 'inputs': [],
        'outputs': [{'name': 'h', 'dtype': 'float32', 'shape': [1]}],
        'variants': {'fp32': {'file': 'graphs/s.onnx'}}})
    d = _m(manifest).to_dict()
    assert d['graphs'][1]['layers'] == (0, 2)
    assert d['action']['gripper'] == {'index': 1, 'rescale': False, 'binarize': False,
                                      'invert': True}
    assert [n.get('fill') for n in d['cameras'][0]['norms']] == [None, (1, 2, 3)]
    assert 'fill' not in d['cameras'][0]['norms'][0]
    assert parse_manifest(json.loads(json.dumps(d))) == _m(manifest)


def test_camera_channels_are_three_per_norm_stream():
    norm = ChannelNorm((0.5,) * 3, (0.5,) * 3)
    assert CameraSpec('c', 8, 8, norms=(norm, norm)).channels == 6
    assert CameraSpec('c', 8, 8).channels == 0


def test_a_space_dim_counts_its_names():
    assert SpaceSpec(names=('a', 'b', 'c'), model_dim=8).dim == 3


def test_the_sequence_length_adds_up_the_layout():
    prompt = PromptSpec(tokenizer_file='t.json', max_length=10, layout=(
        {'kind': 'tokens', 'ids': [1, 2]},
        {'kind': 'image', 'camera': 'c', 'id': 5, 'count': 12, 'cols': 4, 'col_id': 6},
        {'kind': 'image', 'camera': 'c', 'id': 5, 'count': 7},
        {'kind': 'text'},
        {'kind': 'tokens', 'ids': [3, 4, 5], 'repeat': 4},
    ))
    assert prompt.sequence_length == 2 + (12 + 3) + 7 + 10 + 12
    assert PromptSpec(tokenizer_file='t.json', max_length=9).sequence_length == 9
