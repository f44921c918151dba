"""What an ONNX graph file refers to outside itself: operator domains and external-data paths.

A node in a custom operator domain runs only with that domain's library registered (native
code), and an external-data location may point anywhere on disk; a package allows neither.
Allowed are the standard domains ('' and 'ai.onnx', 'ai.onnx.ml') and the functions the model
defines itself (ONNX Runtime and TensorRT inline them); external data must be a plain relative
path next to the graph, listed as the graph's data file in the manifest.

The ONNX file is read as protobuf wire format with the standard library (the runtime does not
import onnx): ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto, FunctionProto
field numbers from onnx/onnx.proto (IR version 10). Subgraphs (If, Loop, Scan bodies), model
functions and training graphs are walked too.
"""

from __future__ import annotations

import mmap
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from vla_ros.runtime.errors import PackageError
from vla_ros.runtime.package.files import check_relative_path

STANDARD_DOMAINS = ('', 'ai.onnx', 'ai.onnx.ml')
_MAX_DEPTH = 64  # nested subgraphs; deeper is not something an exporter writes
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


class _MalformedError(Exception):
    pass


@dataclass
class OnnxRefs:
    """Everything a graph file refers to outside itself."""

    opset_domains: set[str] = field(default_factory=set)
    node_ops: set[tuple[str, str]] = field(default_factory=set)  # (domain, op_type)
    functions: set[tuple[str, str]] = field(default_factory=set)  # (domain, name) defined
    locations: set[str] = field(default_factory=set)  # external-data paths, as written


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= len(buf) or shift > 63:
            raise _MalformedError('truncated or overlong varint')
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf: memoryview):
    """(field number, value) of one message: ints for varints, memoryviews for
    length-delimited fields, None for fixed-width ones."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire in (1, 5):
            value, i = None, i + (8 if wire == 1 else 4)
        else:
            raise _MalformedError(f'wire type {wire}')
        if i > n:
            raise _MalformedError('a field runs past the end of its message')
        yield number, value


def _text(value: memoryview) -> str:
    try:
        return bytes(value).decode('utf-8')
    except UnicodeDecodeError as e:
        raise _MalformedError('a name is not UTF-8') from e


def _tensor(buf: memoryview, refs: OnnxRefs) -> None:
    location, external = None, False
    for number, value in _fields(buf):
        if number == 14:  # data_location
            external = value == _EXTERNAL
        elif number == 13:  # external_data: StringStringEntryProto
            entry = dict(_fields(value))
            if entry.get(1) is not None and _text(entry[1]) == 'location':
                location = _text(entry.get(2, memoryview(b'')))
    if external or location is not None:
        refs.locations.add(location or '')


def _attribute(buf: memoryview, refs: OnnxRefs, depth: int) -> None:
    for number, value in _fields(buf):
        if number in (5, 10):  # t, tensors
            _tensor(value, refs)
        elif number in (6, 11):  # g, graphs
            _graph(value, refs, depth + 1)
        elif number in (22, 23):  # sparse_tensor(s): values and indices are tensors
            for n, v in _fields(value):
                if n in (1, 2):
                    _tensor(v, refs)


def _node(buf: memoryview, refs: OnnxRefs, depth: int) -> None:
    domain, op = '', ''
    for number, value in _fields(buf):
        if number == 7:
            domain = _text(value)
        elif number == 4:
            op = _text(value)
        elif number == 5:
            _attribute(value, refs, depth)
    refs.node_ops.add((domain, op))


def _graph(buf: memoryview, refs: OnnxRefs, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise _MalformedError(f'subgraphs nested deeper than {_MAX_DEPTH}')
    for number, value in _fields(buf):
        if number == 1:
            _node(value, refs, depth)
        elif number == 5:  # initializer
            _tensor(value, refs)
        elif number == 15:  # sparse_initializer
            for n, v in _fields(value):
                if n in (1, 2):
                    _tensor(v, refs)


def _opset_domain(buf: memoryview) -> str:
    return next((_text(v) for n, v in _fields(buf) if n == 1), '')


def scan(data: bytes | memoryview) -> OnnxRefs:
    """The references of one serialized ModelProto; ValueError if it is not one."""
    refs = OnnxRefs()
    try:
        for number, value in _fields(memoryview(data)):
            if number == 8:  # opset_import
                refs.opset_domains.add(_opset_domain(value))
            elif number == 7:  # graph
                _graph(value, refs, 0)
            elif number == 20:  # training_info: initialization, algorithm graphs
                for n, v in _fields(value):
                    if n in (1, 2):
                        _graph(v, refs, 0)
            elif number == 25:  # functions
                name, domain = '', ''
                for n, v in _fields(value):
                    if n == 1:
                        name = _text(v)
                    elif n == 10:
                        domain = _text(v)
                    elif n == 7:
                        _node(v, refs, 0)
                    elif n == 9:
                        refs.opset_domains.add(_opset_domain(v))
                refs.functions.add((domain, name))
    except (_MalformedError, TypeError) as e:
        raise ValueError(f'not a valid ONNX model: {e}') from e
    return refs


def _scan_file(path: Path) -> OnnxRefs:
    with open(path, 'rb') as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        with memoryview(mm) as view:
            try:
                return scan(view)
            except ValueError as e:
                reason = str(e)
    # Raised once the failed scan's traceback (whose frames hold slices of the mapping) is
    # gone: the mapping cannot be closed while a slice exists (a BufferError instead).
    raise ValueError(reason)


def check_graph_file(root: Path, graph: str, rel: str, data_files: tuple[str, ...]) -> None:
    """Raises PackageError when graph `graph`'s file `rel` uses an operator domain outside the
    standard ones or external data that is not one of its listed data files."""
    try:
        refs = _scan_file(root / rel)
    except ValueError as e:  # mmap of an empty file, or not a ModelProto
        raise PackageError('invalid', f'graph {graph!r} ({rel}): {e}') from e
    local = {d for d, _ in refs.functions}
    custom = sorted({d for d, op in refs.node_ops
                     if d not in STANDARD_DOMAINS and (d, op) not in refs.functions}
                    | (refs.opset_domains - set(STANDARD_DOMAINS) - local))
    if custom:
        raise PackageError('unsafe_file', f'graph {graph!r} ({rel}) uses the custom operator '
                           f'domain {custom[0]!r}; a package may use only the standard ONNX '
                           f'domains {list(STANDARD_DOMAINS)} (custom operators need native '
                           'code registered at load); re-export without custom operators')
    base = posixpath.dirname(rel)
    for location in sorted(refs.locations):
        check_relative_path(location, f'graph {graph!r} ({rel}) external data')
        target = posixpath.join(base, location) if base else location
        if target not in data_files:
            raise PackageError('unsafe_file', f'graph {graph!r} ({rel}) reads external data '
                               f'from {location!r}, which is not one of its data files '
                               f'{list(data_files)} in the manifest')
