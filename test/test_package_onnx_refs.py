"""What an ONNX graph refers to outside itself (`onnx_refs.py`), read from real protobufs built
with the onnx helper API: operator domains wherever a node sits (subgraphs, functions,
training graphs), external-data locations wherever a tensor sits, malformed files refused with
their reason, and the package rule built on it (`check_graph_file`)."""

from __future__ import annotations

import re

import pytest
from onnx import (
    AttributeProto,
    FunctionProto,
    GraphProto,
    ModelProto,
    NodeProto,
    TensorProto,
    helper,
)

from vla_ros.runtime.package.onnx_refs import OnnxRefs, scan


def _external(name: str, location: str | None = None, *, flag: bool = True,
              extra: tuple[tuple[str, str], ...] = ()) -> TensorProto:
    """A one-float tensor whose data lives in `location` (data_location set when `flag`)."""
    t = helper.make_tensor(name, TensorProto.FLOAT, [1], [1.0])
    if flag:
        t.data_location = TensorProto.EXTERNAL
    entries = (() if location is None else (('location', location),)) + extra
    for key, value in entries:
        e = t.external_data.add()
        e.key, e.value = key, value
    return t


def _graph(nodes=(), initializers=(), sparse=(), name='g') -> GraphProto:
    return helper.make_graph(list(nodes), name, [], [], initializer=list(initializers),
                             sparse_initializer=list(sparse))


def _model(graph: GraphProto | None = None, functions=(), opsets=()) -> ModelProto:
    model = helper.make_model(graph or _graph([helper.make_node('Neg', ['x'], ['y'])]),
                              functions=list(functions),
                              opset_imports=[helper.make_opsetid('', 20), *opsets])
    return model


def _refs(model: ModelProto) -> OnnxRefs:
    return scan(model.SerializeToString())


def _nest(graph: GraphProto, levels: int, inner: NodeProto) -> None:
    """Adds to `graph` an If node whose branch holds an If node whose branch ... `levels`
    graphs deep, the last holding `inner` (built in place: protobuf refuses to copy a message
    this deep)."""
    node = graph.node.add()
    for k in range(levels):
        node.op_type = 'If'
        node.input.append('c')
        attr = node.attribute.add()
        attr.name, attr.type = 'then_branch', AttributeProto.GRAPH
        attr.g.name = f'l{k}'
        node = attr.g.node.add()
    node.CopyFrom(inner)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    key = _varint(number << 3 | wire)
    return key + (_varint(len(payload)) + payload if wire == 2 else payload)


def _opset(domain: str) -> bytes:
    return _field(8, 2, helper.make_opsetid(domain, 1).SerializeToString())


# scan: operator domains


def test_a_plain_model_uses_the_default_domain_only():
    refs = _refs(_model())
    assert refs == OnnxRefs(opset_domains={''}, node_ops={('', 'Neg')}, functions=set(),
                            locations=set())


def test_every_node_is_recorded_with_its_domain():
    refs = _refs(_model(_graph([helper.make_node('Neg', ['x'], ['y']),
                                helper.make_node('Gelu', ['y'], ['z'], domain='com.x')])))
    assert refs.node_ops == {('', 'Neg'), ('com.x', 'Gelu')}


def test_a_node_without_an_operator_type_is_recorded_with_an_empty_one():
    node = NodeProto()
    node.domain = 'com.x'
    assert _refs(_model(_graph([node]))).node_ops == {('com.x', '')}


def test_every_opset_import_is_recorded():
    refs = _refs(_model(opsets=[helper.make_opsetid('com.x', 1),
                                helper.make_opsetid('ai.onnx.ml', 3)]))
    assert refs.opset_domains == {'', 'com.x', 'ai.onnx.ml'}


def test_an_opset_import_without_a_domain_is_the_default_domain():
    model = ModelProto()
    model.opset_import.add().version = 20
    assert _refs(model).opset_domains == {''}


@pytest.mark.parametrize('branch', ['then_branch', 'else_branch'])
def test_nodes_inside_a_subgraph_are_recorded(branch):
    inner = _graph([helper.make_node('MyOp', ['x'], ['y'], domain='com.x')])
    node = helper.make_node('If', ['c'], ['y'], **{branch: inner})
    assert ('com.x', 'MyOp') in _refs(_model(_graph([node]))).node_ops


def test_nodes_inside_a_list_of_subgraphs_are_recorded():
    graphs = [_graph([helper.make_node('Neg', ['x'], ['y'])], name='a'),
              _graph([helper.make_node('MyOp', ['x'], ['y'], domain='com.x')], name='b')]
    node = helper.make_node('Switch', ['c'], ['y'], branches=graphs)
    assert _refs(_model(_graph([node]))).node_ops == {('', 'Switch'), ('', 'Neg'),
                                                       ('com.x', 'MyOp')}


def _deep_model(levels: int, domain: str = 'com.deep') -> ModelProto:
    model = _model()
    _nest(model.graph, levels, helper.make_node('MyOp', ['x'], ['y'], domain=domain))
    return model


def test_subgraphs_64_deep_are_read():
    assert ('com.deep', 'MyOp') in _refs(_deep_model(64)).node_ops


def test_subgraphs_nested_deeper_than_64_are_refused():
    with pytest.raises(ValueError, match='^not a valid ONNX model: subgraphs nested deeper '
                       'than 64$'):
        _refs(_deep_model(65))


def test_a_function_is_recorded_with_its_domain_and_its_nodes_and_opsets():
    fn = helper.make_function('pkg.local', 'Negate', ['x'], ['y'],
                              [helper.make_node('Neg', ['x'], ['y']),
                               helper.make_node('Op', ['y'], ['z'], domain='com.inner')],
                              [helper.make_opsetid('', 20), helper.make_opsetid('com.f', 1)])
    refs = _refs(_model(functions=[fn]))
    assert refs.functions == {('pkg.local', 'Negate')}
    assert {('', 'Neg'), ('com.inner', 'Op')} <= refs.node_ops
    assert refs.opset_domains == {'', 'com.f'}


def test_a_function_without_name_or_domain_is_recorded_with_empty_ones():
    unnamed, undomained = FunctionProto(), FunctionProto()
    unnamed.domain = 'pkg.local'
    undomained.name = 'F'
    refs = _refs(_model(functions=[unnamed, undomained]))
    assert refs.functions == {('pkg.local', ''), ('', 'F')}


@pytest.mark.parametrize('levels', [64, 65])
def test_subgraphs_inside_a_function_are_read_64_deep(levels):
    model = _model()
    fn = model.functions.add()
    fn.name, fn.domain = 'F', 'pkg.local'
    _nest(fn, levels, helper.make_node('MyOp', ['x'], ['y'], domain='com.deep'))
    if levels > 64:
        with pytest.raises(ValueError, match='nested deeper than 64'):
            _refs(model)
    else:
        assert ('com.deep', 'MyOp') in _refs(model).node_ops


@pytest.mark.parametrize('part', ['initialization', 'algorithm'])
@pytest.mark.parametrize('levels', [64, 65])
def test_training_graphs_are_read_64_deep(part, levels):
    model = _model()
    graph = getattr(model.training_info.add(), part)
    _nest(graph, levels, helper.make_node('MyOp', ['x'], ['y'], domain='com.train'))
    if levels > 64:
        with pytest.raises(ValueError, match='nested deeper than 64'):
            _refs(model)
    else:
        assert ('com.train', 'MyOp') in _refs(model).node_ops


# scan: external data


def test_an_external_initializer_records_its_location():
    refs = _refs(_model(_graph(initializers=[_external('w', 'w.data')])))
    assert refs.locations == {'w.data'}


def test_only_the_location_entry_names_the_file():
    t = _external('w', 'w.data', extra=(('offset', '0'), ('length', '4')))
    assert _refs(_model(_graph(initializers=[t]))).locations == {'w.data'}
    t = _external('w', None, extra=(('offset', '0'), ('length', '4')))
    assert _refs(_model(_graph(initializers=[t]))).locations == {''}


def test_a_location_without_the_external_flag_still_counts():
    t = _external('w', 'w.data', flag=False)
    assert _refs(_model(_graph(initializers=[t]))).locations == {'w.data'}


def test_the_external_flag_without_a_location_counts_as_an_empty_path():
    assert _refs(_model(_graph(initializers=[_external('w')]))).locations == {''}


def test_a_location_entry_without_a_value_is_an_empty_path():
    t = helper.make_tensor('w', TensorProto.FLOAT, [1], [1.0])
    t.external_data.add().key = 'location'
    assert _refs(_model(_graph(initializers=[t]))).locations == {''}


def test_an_entry_without_a_key_is_not_a_location():
    t = helper.make_tensor('w', TensorProto.FLOAT, [1], [1.0])
    t.external_data.add().value = 'w.data'
    assert _refs(_model(_graph(initializers=[t]))).locations == set()


def test_a_tensor_stored_inline_has_no_location():
    t = helper.make_tensor('w', TensorProto.FLOAT, [1], [1.0])
    t.data_location = TensorProto.DEFAULT  # written explicitly
    assert _refs(_model(_graph(initializers=[t]))).locations == set()


def test_an_external_constant_attribute_records_its_location():
    node = helper.make_node('Constant', [], ['y'], value=_external('c', 'const.data'))
    assert _refs(_model(_graph([node]))).locations == {'const.data'}


def test_an_external_tensor_in_a_list_attribute_records_its_location():
    node = helper.make_node('Custom', [], ['y'],
                            values=[helper.make_tensor('a', TensorProto.FLOAT, [1], [1.0]),
                                    _external('b', 'list.data')])
    assert _refs(_model(_graph([node]))).locations == {'list.data'}


def test_an_external_tensor_inside_a_subgraph_records_its_location():
    inner = _graph([helper.make_node('Neg', ['w'], ['y'])], [_external('w', 'sub.data')])
    node = helper.make_node('If', ['c'], ['y'], then_branch=inner)
    assert _refs(_model(_graph([node]))).locations == {'sub.data'}


def _sparse(values: TensorProto, indices: TensorProto):
    return helper.make_sparse_tensor(values, indices, [4])


def _indices(location: str | None = None) -> TensorProto:
    t = helper.make_tensor('i', TensorProto.INT64, [1], [2])
    if location:
        t.data_location = TensorProto.EXTERNAL
        e = t.external_data.add()
        e.key, e.value = 'location', location
    return t


@pytest.mark.parametrize('where', ['values', 'indices'])
def test_external_parts_of_a_sparse_initializer_record_their_location(where):
    values = _external('v', 'v.data') if where == 'values' else _external('v', flag=False)
    sparse = _sparse(values, _indices('i.data' if where == 'indices' else None))
    assert _refs(_model(_graph(sparse=[sparse]))).locations == {f'{where[0]}.data'}


@pytest.mark.parametrize('where', ['values', 'indices'])
def test_external_parts_of_a_sparse_attribute_record_their_location(where):
    values = _external('v', 'v.data') if where == 'values' else _external('v', flag=False)
    sparse = _sparse(values, _indices('i.data' if where == 'indices' else None))
    one = helper.make_node('Constant', [], ['y'], sparse_value=sparse)
    assert _refs(_model(_graph([one]))).locations == {f'{where[0]}.data'}
    many = helper.make_node('Custom', [], ['y'], sparse_values=[sparse])
    assert _refs(_model(_graph([many]))).locations == {f'{where[0]}.data'}


# scan: the wire format


def test_fixed_width_fields_are_skipped_by_their_width():
    data = (_field(99, 1, b'\x80' * 8) + _opset('com.a') + _field(98, 5, b'\x80' * 4)
            + _opset('com.b'))
    assert scan(data).opset_domains == {'com.a', 'com.b'}


@pytest.mark.parametrize('data,reason', [
    (b'\x80', 'truncated or overlong varint'),
    (_field(99, 0, b'') + b'\x80\x80', 'truncated or overlong varint'),
    (_field(99, 0, b'\xff' * 10 + b'\x01'), 'truncated or overlong varint'),
    (_field(99, 3, b''), 'wire type 3'),
    (_field(99, 1, b'\x00' * 7), 'a field runs past the end of its message'),
    (_field(99, 2, b'abc')[:-1], 'a field runs past the end of its message'),
    (_field(8, 2, _field(1, 2, b'\xff\xfe')), 'a name is not UTF-8'),
])
def test_a_malformed_model_is_refused_with_its_reason(data, reason):
    with pytest.raises(ValueError, match=f'^not a valid ONNX model: {re.escape(reason)}$'):
        scan(data)


def test_a_varint_of_ten_bytes_is_read():
    assert scan(_field(99, 0, b'\xff' * 9 + b'\x01') + _opset('com.a')).opset_domains == {
        'com.a'}


def test_a_message_field_written_as_a_number_is_refused():
    with pytest.raises(ValueError, match='^not a valid ONNX model: '):
        scan(_field(7, 0, b'\x01'))
