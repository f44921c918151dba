"""check_graph_file, the package rule on graph files: custom-operator domains and external data
refused or allowed as the package declares, malformed files refused as invalid."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx import (
    ModelProto,
    helper,
)
from test_package_loader import _fails
from test_package_onnx_refs import _external, _graph, _model

from vla_ros.runtime.package.onnx_refs import check_graph_file

# check_graph_file: the package rule


def _save(root: Path, rel: str, model: ModelProto | bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())


CUSTOM = ("graph 'g' (g.onnx) uses the custom operator domain {!r}; a package may use only the "
          "standard ONNX domains ['', 'ai.onnx', 'ai.onnx.ml'] (custom operators need native "
          'code registered at load); re-export without custom operators')


def test_the_standard_domains_are_allowed(tmp_path):
    nodes = [helper.make_node('Neg', ['x'], ['y']),
             helper.make_node('Relu', ['y'], ['z'], domain='ai.onnx'),
             helper.make_node('Normalizer', ['z'], ['w'], domain='ai.onnx.ml')]
    _save(tmp_path, 'g.onnx', _model(_graph(nodes), opsets=[
        helper.make_opsetid('ai.onnx.ml', 3), helper.make_opsetid('ai.onnx', 20)]))
    check_graph_file(tmp_path, 'g', 'g.onnx', ())


def test_a_node_in_a_custom_domain_is_refused_by_name(tmp_path):
    _save(tmp_path, 'g.onnx', _model(_graph([helper.make_node('Op', ['x'], ['y'],
                                                              domain='com.b'),
                                             helper.make_node('Op', ['x'], ['y'],
                                                              domain='com.a')])))
    with _fails('unsafe_file', CUSTOM.format('com.a')):  # the first, sorted
        check_graph_file(tmp_path, 'g', 'g.onnx', ())


def test_an_imported_custom_domain_is_refused_even_unused(tmp_path):
    _save(tmp_path, 'g.onnx', _model(opsets=[helper.make_opsetid('com.x', 1)]))
    with _fails('unsafe_file', CUSTOM.format('com.x')):
        check_graph_file(tmp_path, 'g', 'g.onnx', ())


def _local_function(domain='pkg.local', name='Negate'):
    return helper.make_function(domain, name, ['x'], ['y'],
                                [helper.make_node('Neg', ['x'], ['y'])],
                                [helper.make_opsetid('', 20)])


def test_a_model_function_and_its_domain_are_allowed(tmp_path):
    node = helper.make_node('Negate', ['x'], ['y'], domain='pkg.local')
    _save(tmp_path, 'g.onnx', _model(_graph([node]), functions=[_local_function()],
                                     opsets=[helper.make_opsetid('pkg.local', 1)]))
    check_graph_file(tmp_path, 'g', 'g.onnx', ())


def test_an_undefined_operator_in_a_function_domain_is_refused(tmp_path):
    nodes = [helper.make_node('Negate', ['x'], ['y'], domain='pkg.local'),
             helper.make_node('Native', ['y'], ['z'], domain='pkg.local')]
    _save(tmp_path, 'g.onnx', _model(_graph(nodes), functions=[_local_function()]))
    with _fails('unsafe_file', CUSTOM.format('pkg.local')):
        check_graph_file(tmp_path, 'g', 'g.onnx', ())


def test_a_function_of_the_same_name_in_another_domain_does_not_allow_a_node(tmp_path):
    node = helper.make_node('Negate', ['x'], ['y'], domain='com.x')
    _save(tmp_path, 'g.onnx', _model(_graph([node]), functions=[_local_function()]))
    with _fails('unsafe_file', CUSTOM.format('com.x')):
        check_graph_file(tmp_path, 'g', 'g.onnx', ())


def test_an_empty_graph_file_is_refused_as_invalid(tmp_path):
    _save(tmp_path, 'g.onnx', b'')
    with _fails('invalid', "graph 'g' (g.onnx): cannot mmap an empty file"):
        check_graph_file(tmp_path, 'g', 'g.onnx', ())


def test_a_file_that_is_no_model_is_refused_as_invalid(tmp_path):
    _save(tmp_path, 'g.onnx', b'\x0b')
    with _fails('invalid', "graph 'g' (g.onnx): not a valid ONNX model: wire type 3"):
        check_graph_file(tmp_path, 'g', 'g.onnx', ())


def _with_data(location: str) -> ModelProto:
    return _model(_graph([helper.make_node('Neg', ['w'], ['y'])],
                         [_external('w', location)]))


def test_external_data_next_to_the_graph_is_allowed_when_listed(tmp_path):
    _save(tmp_path, 'graphs/g.onnx', _with_data('g.data'))
    check_graph_file(tmp_path, 'g', 'graphs/g.onnx', ('graphs/g.data',))
    _save(tmp_path, 'top.onnx', _with_data('top.data'))
    check_graph_file(tmp_path, 'g', 'top.onnx', ('top.data',))


def test_external_data_is_resolved_against_the_graphs_folder(tmp_path):
    _save(tmp_path, 'graphs/g.onnx', _with_data('g.data'))
    with _fails('unsafe_file', "graph 'g' (graphs/g.onnx) reads external data from 'g.data', "
                "which is not one of its data files ['g.data'] in the manifest"):
        check_graph_file(tmp_path, 'g', 'graphs/g.onnx', ('g.data',))


def test_unlisted_external_data_is_refused(tmp_path):
    _save(tmp_path, 'g.onnx', _with_data('w.data'))
    with _fails('unsafe_file', "graph 'g' (g.onnx) reads external data from 'w.data', which "
                'is not one of its data files [] in the manifest'):
        check_graph_file(tmp_path, 'g', 'g.onnx', ())


@pytest.mark.parametrize('location', ['/etc/passwd', '../w.data', ''])
def test_external_data_outside_the_package_is_refused(tmp_path, location):
    _save(tmp_path, 'g.onnx', _with_data(location))
    with _fails('path_escape', f"graph 'g' (g.onnx) external data: path {location!r} must be a "
                'plain relative path inside the package (no "..", no leading "/" or "./")'):
        check_graph_file(tmp_path, 'g', 'g.onnx', (location,))
