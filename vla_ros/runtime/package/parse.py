"""Manifest parsing: decoded JSON -> a validated `Manifest`.

Every field is type- and range-checked as it is read (`reader.Reader`), unknown fields are
refused, then the parts are checked against each other (`consistency.py`). Every failure
is a `PackageError` naming the field, the value and what is allowed. No file access here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from vla_ros.runtime.errors import PackageError
from vla_ros.runtime.package.consistency import check_consistency, fail, unique
from vla_ros.runtime.package.manifest import (
    DTYPES,
    FAMILIES,
    GRAPH_ROLES,
    HEAD_TYPES,
    METRICS,
    PADDING_SIDES,
    PRECISIONS,
    RANGED_ROLES,
    READABLE_VERSIONS,
    ROLE_SINCE,
    ExitSpec,
    FileEntry,
    FlowSpec,
    GraphFile,
    GraphSpec,
    HeadSpec,
    Manifest,
    PromptSpec,
    TensorSpec,
    ThresholdSet,
)
from vla_ros.runtime.package.parse_parts import parse_camera, parse_space
from vla_ros.runtime.package.reader import Reader


def _parse_tensor(r: Reader) -> TensorSpec:
    shape = r.get('shape', list)
    for i, d in enumerate(shape):
        if isinstance(d, bool) or not isinstance(d, (int, str)) or (isinstance(d, int) and d < 1):
            raise fail('invalid', f'{r.where}.shape[{i}]',
                        f'expected a positive int or a symbol name, got {d!r}')
    spec = TensorSpec(name=r.get('name', str), dtype=r.choice('dtype', DTYPES), shape=tuple(shape))
    r.done()
    return spec


def _parse_graph(r: Reader) -> GraphSpec:
    name = r.get('name', str)
    role = r.choice('role', GRAPH_ROLES)
    inputs = tuple(_parse_tensor(t) for t in r.items('inputs'))
    outputs = tuple(_parse_tensor(t) for t in r.items('outputs'))
    if not outputs:
        raise fail('invalid', f'{r.where}.outputs', 'a graph needs at least one output')
    unique(tuple(t.name for t in inputs), f'{r.where}.inputs')
    unique(tuple(t.name for t in outputs), f'{r.where}.outputs')
    variants_r = r.sub('variants')
    variants = {}
    for precision in list(variants_r.data):
        if precision not in PRECISIONS:
            raise fail('invalid', f'{variants_r.where}', f'precision {precision!r} is not one '
                        f'of {list(PRECISIONS)}')
        vr = variants_r.sub(precision)
        variants[precision] = GraphFile(file=vr.get('file', str),
                                        data_files=vr.strings('data_files', ()))
        vr.done()
    variants_r.done()
    if 'fp32' not in variants:
        raise fail('invalid', variants_r.where, 'every graph needs an fp32 variant')
    layers = r.get('layers', list, None)
    if layers is not None:
        if len(layers) != 2 or not all(isinstance(x, int) and not isinstance(x, bool)
                                       for x in layers) or not 0 <= layers[0] < layers[1]:
            raise fail('invalid', f'{r.where}.layers', f'expected [start, end) with '
                        f'0 <= start < end, got {layers!r}')
        layers = (layers[0], layers[1])
    if (role in RANGED_ROLES) != (layers is not None):
        raise fail('invalid', f'{r.where}.layers', f'graphs of roles {RANGED_ROLES}, and only '
                    'those, name the layers [start, end) they run')
    r.done()
    return GraphSpec(name=name, role=role, inputs=inputs, outputs=outputs,
                     variants=variants, layers=layers)


def _parse_layout_item(r: Reader, cameras: set[str]) -> dict[str, Any]:
    kind = r.choice('kind', ('text', 'image', 'tokens'))
    item: dict[str, Any] = {'kind': kind}
    if kind == 'image':
        item['camera'] = r.choice('camera', tuple(sorted(cameras)))
        item['id'] = r.int_in('id', 0)
        item['count'] = r.int_in('count', 1)
        cols = r.get('cols', int, None)
        if cols is not None:  # Molmo's row markers (<im_col>)
            item['cols'] = r.int_in('cols', 1)
            item['col_id'] = r.int_in('col_id', 0)
            if item['count'] % item['cols']:
                raise fail('invalid', f'{r.where}.cols', f'{item["cols"]} does not divide '
                           f'count {item["count"]}')
    elif kind == 'tokens':
        ids = r.get('ids', list)
        if not ids or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids):
            raise fail('invalid', f'{r.where}.ids', f'expected non-negative token ids, got {ids}')
        item['ids'] = list(ids)
        item['repeat'] = r.int_in('repeat', 1, default=1)
    r.done()
    return item


def _parse_exits(r: Reader) -> ExitSpec:
    num_layers = r.int_in('num_layers', 1, 1000)
    layers = tuple(r.get('layers', list))
    where = f'{r.where}.layers'
    if not layers or any(isinstance(x, bool) or not isinstance(x, int) for x in layers):
        raise fail('invalid', where, f'expected a non-empty list of layer indices, got '
                    f'{layers!r}')
    if list(layers) != sorted(set(layers)):
        raise fail('invalid', where, f'must be strictly increasing, got {list(layers)}')
    if layers[0] < 0 or layers[-1] != num_layers - 1:
        raise fail('inconsistent', where, f'must lie in [0, {num_layers - 1}] and end at the '
                    f'last layer {num_layers - 1}; got {list(layers)}')
    sets = []
    for sr in r.items('threshold_sets', []):
        # Metrics are >= 0, so a negative threshold means "never exit here".
        values = sr.floats('values', len(layers) - 1)
        metric = sr.choice('metric', METRICS)
        calibration = sr.get('calibration', dict, {})
        if metric == 'l2' and calibration.get('l2') != 'rms':
            metric = 'l2_norm'  # calibrated when l2 meant the Euclidean norm
        sets.append(ThresholdSet(
            name=sr.get('name', str), metric=metric, values=values,
            dims=sr.choice('dims', ('named', 'all'), 'named'),
            expected_compute_fraction=sr.number('expected_compute_fraction', 0.0, 1.0,
                                                lo_open=True),
            calibration=calibration,
        ))
        sr.done()
    unique(tuple(s.name for s in sets), f'{r.where}.threshold_sets')
    default = r.get('default_threshold_set', (str, type(None)), None)
    if default is not None and default not in {s.name for s in sets}:
        raise fail('inconsistent', f'{r.where}.default_threshold_set',
                    f'{default!r} is not among the threshold sets {[s.name for s in sets]}')
    r.done()
    return ExitSpec(num_layers=num_layers, layers=layers, threshold_sets=tuple(sets),
                    default_threshold_set=default)


def parse_manifest(data: Any) -> Manifest:
    """Build a validated Manifest from decoded JSON. Raises PackageError on any fault."""
    r = Reader(data, '')
    version = r.get('schema_version', int)
    if version not in READABLE_VERSIONS:
        raise PackageError(
            'schema_version',
            f'manifest schema_version {version} is not supported: this vla_ros reads versions '
            f'{list(READABLE_VERSIONS)}. Re-export the package with this vla_ros, or install '
            'the vla_ros release that wrote it.')
    family = r.choice('family', FAMILIES)
    hr = r.sub('head')
    head = HeadSpec(type=hr.choice('type', HEAD_TYPES), config=hr.get('config', dict, {}))
    hr.done()
    cameras = tuple(parse_camera(c) for c in r.items('cameras'))
    graphs_raw = data.get('graphs', []) if isinstance(data, dict) else []
    # A vision-less package (an A1 checkpoint published without its vision tower) has no
    # camera slot; one with a vision graph needs one.
    if not cameras and any(isinstance(g, dict) and g.get('role') == 'vision'
                           for g in graphs_raw):
        raise fail('invalid', 'cameras', 'a package with a vision graph needs a camera slot')
    unique(tuple(c.name for c in cameras), 'cameras')
    state = parse_space(r.sub('state'), action=False)
    action = parse_space(r.sub('action'), action=True)
    pr = r.sub('prompt')
    prompt = PromptSpec(
        tokenizer_file=pr.get('tokenizer_file', str), template=pr.get('template', str),
        max_length=pr.int_in('max_length', 1, 32768), pad_id=pr.int_in('pad_id', 0),
        lowercase=pr.get('lowercase', bool, False),
        padding_side=pr.choice('padding_side', PADDING_SIDES, 'right'))
    if '{instruction}' not in prompt.template:
        raise fail('invalid', 'prompt.template', 'must contain {instruction}')
    layout = tuple(_parse_layout_item(it, {c.name for c in cameras})
                   for it in pr.items('layout', [{'kind': 'text'}]))
    if sum(item['kind'] == 'text' for item in layout) != 1:
        raise fail('invalid', 'prompt.layout', 'needs exactly one text item')
    prompt = replace(prompt, layout=layout)
    pr.done()
    exits = _parse_exits(r.sub('exits'))
    flow = None
    fr = r.sub('flow', None)
    if fr is not None:
        flow = FlowSpec(
            noise_at=fr.int_in('noise_at', 0, 1),
            noise=fr.choice('noise', ('uniform', 'gaussian')),
            num_steps=fr.int_in('num_steps', 1, 1000),
            truncated_steps=fr.int_in('truncated_steps', 1, 1000, 2),
            warm_start=fr.get('warm_start', bool, True),
            action_mask=fr.get('action_mask', bool, False))
        fr.done()
    graphs = tuple(_parse_graph(g) for g in r.items('graphs'))
    for g in graphs:
        if ROLE_SINCE.get(g.role, 1) > version:
            raise fail('invalid', f'graphs[{g.name}].role',
                        f'role {g.role!r} needs schema_version {ROLE_SINCE[g.role]}, the '
                        f'manifest says {version}')
    files = {}
    for path, entry in r.get('files', dict, {}).items():
        er = Reader(entry, f'files[{path!r}]')
        sha = er.get('sha256', str)
        if len(sha) != 64 or any(c not in '0123456789abcdef' for c in sha):
            raise fail('invalid', f'files[{path!r}].sha256', 'expected 64 lowercase hex digits')
        files[path] = FileEntry(sha256=sha, bytes=er.int_in('bytes', 0))
        er.done()
    m = Manifest(
        schema_version=version, name=r.get('name', str), family=family, head=head,
        cameras=cameras, state=state, action=action, prompt=prompt, exits=exits, flow=flow,
        graphs=graphs, embodiment=r.get('embodiment', dict, {}),
        provenance=r.get('provenance', dict, {}), files=files)
    r.done()
    check_consistency(m)
    return m

