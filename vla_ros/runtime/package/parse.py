"""Manifest parsing: decoded JSON -> a validated `Manifest`.

Every field is type- and range-checked as it is read (`_Reader`), unknown fields are
refused, then the parts are checked against each other (`consistency.py`). Every failure
is a `PackageError` naming the field, the value and what is allowed. No file access here.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from vla_ros.runtime.errors import PackageError
from vla_ros.runtime.package.consistency import check_consistency, fail, unique
from vla_ros.runtime.package.manifest import (
    ACTION_MODES,
    BLANK_VIEWS,
    DTYPES,
    FAMILIES,
    GRAPH_ROLES,
    HEAD_TYPES,
    LAYERED_ROLES,
    METRICS,
    NORM_KINDS,
    PRECISIONS,
    RESIZE_MODES,
    SCHEMA_VERSION,
    ActionSpec,
    CameraSpec,
    ChannelNorm,
    ExitSpec,
    FileEntry,
    FlowSpec,
    GraphFile,
    GraphSpec,
    HeadSpec,
    Manifest,
    Normalization,
    PromptSpec,
    SpaceSpec,
    TensorSpec,
    ThresholdSet,
)


class _Reader:
    """Typed access to one JSON object, with errors that name the field's path."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise fail('invalid', where, f'expected an object, got {type(data).__name__}')
        self.data = data
        self.where = where
        self.used: set[str] = set()

    def _path(self, key: str) -> str:
        return f'{self.where}.{key}' if self.where else key

    def get(self, key: str, types: type | tuple[type, ...], default: Any = ...) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise fail('invalid', self._path(key), 'is required but missing')
            return default
        value = self.data[key]
        # bool is an int in Python; a flag is never a count.
        if isinstance(value, bool) and bool not in _as_tuple(types):
            raise fail('invalid', self._path(key), f'expected {_names(types)}, got a boolean')
        if not isinstance(value, types):
            raise fail('invalid', self._path(key),
                        f'expected {_names(types)}, got {type(value).__name__} {value!r:.60}')
        return value

    def choice(self, key: str, allowed: tuple[str, ...], default: Any = ...) -> str:
        value = self.get(key, str, default)
        if value not in allowed:
            raise fail('invalid', self._path(key), f'{value!r} is not one of {list(allowed)}')
        return value

    def int_in(self, key: str, lo: int, hi: int | None = None, default: Any = ...) -> int:
        value = self.get(key, int, default)
        if value < lo or (hi is not None and value > hi):
            bound = f'[{lo}, {hi}]' if hi is not None else f'>= {lo}'
            raise fail('invalid', self._path(key), f'{value} is outside {bound}')
        return value

    def number(self, key: str, lo: float | None = None, hi: float | None = None,
               default: Any = ..., lo_open: bool = False) -> float:
        value = float(self.get(key, (int, float), default))
        if not math.isfinite(value):
            raise fail('non_finite', self._path(key), f'{value} is not finite')
        if lo is not None and (value < lo or (lo_open and value == lo)):
            op = '>' if lo_open else '>='
            raise fail('invalid', self._path(key), f'{value} must be {op} {lo}')
        if hi is not None and value > hi:
            raise fail('invalid', self._path(key), f'{value} must be <= {hi}')
        return value

    def floats(self, key: str, length: int | None = None, default: Any = ...) -> tuple[float, ...]:
        values = self.get(key, list, default)
        path = self._path(key)
        out = []
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise fail('invalid', f'{path}[{i}]', f'expected a number, got {v!r:.40}')
            if not math.isfinite(v):
                raise fail('non_finite', f'{path}[{i}]', f'{v} is not finite')
            out.append(float(v))
        if length is not None and len(out) != length:
            raise fail('inconsistent', path, f'has {len(out)} values, expected {length}')
        return tuple(out)

    def strings(self, key: str, default: Any = ...) -> tuple[str, ...]:
        values = self.get(key, list, default)
        for i, v in enumerate(values):
            if not isinstance(v, str) or not v:
                raise fail('invalid', f'{self._path(key)}[{i}]',
                            f'expected a non-empty string, got {v!r:.40}')
        return tuple(values)

    def sub(self, key: str, default: Any = ...) -> _Reader | None:
        value = self.get(key, dict, default)
        return None if value is None else _Reader(value, self._path(key))

    def items(self, key: str, default: Any = ...) -> list[_Reader]:
        values = self.get(key, list, default)
        return [_Reader(v, f'{self._path(key)}[{i}]') for i, v in enumerate(values)]

    def done(self) -> None:
        """Reject unknown keys: a typo in a manifest must not be silently ignored."""
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise fail('invalid', self.where or '<root>', f'unknown field(s) {unknown}')


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _names(types: type | tuple[type, ...]) -> str:
    return ' or '.join(t.__name__ for t in _as_tuple(types))



def _parse_norm(r: _Reader, length: int) -> Normalization:
    kind = r.choice('kind', tuple(NORM_KINDS))
    stats_r = r.sub('stats', default={})
    stats = {}
    for key in NORM_KINDS[kind]:
        stats[key] = stats_r.floats(key, length)
    # Extra statistics (e.g. mean/std beside bounds) are kept for reference, also validated.
    for key in list(stats_r.data):
        if key not in stats:
            stats[key] = stats_r.floats(key, length)
    clip = r.get('clip', bool, False)
    r.done()
    if kind == 'mean_std' and any(s <= 0 for s in stats['std']):
        raise fail('invalid', f'{r.where}.stats.std', 'every std must be > 0')
    lo_hi = {'bounds': ('min', 'max'), 'bounds_q99': ('q01', 'q99')}.get(kind)
    if lo_hi:
        lo, hi = stats[lo_hi[0]], stats[lo_hi[1]]
        bad = [i for i, (a, b) in enumerate(zip(lo, hi, strict=True)) if a > b]
        if bad:
            raise fail('inconsistent', f'{r.where}.stats',
                        f'{lo_hi[0]} > {lo_hi[1]} at indices {bad}')
    return Normalization(kind=kind, stats=stats, clip=clip)


def _parse_space(r: _Reader, action: bool) -> SpaceSpec:
    names = r.strings('names')
    if not names:
        raise fail('invalid', f'{r.where}.names', 'must name at least one entry')
    unique(names, f'{r.where}.names')
    model_dim = r.int_in('model_dim', len(names))
    norm = _parse_norm(r.sub('normalization'), len(names))
    if not action:
        r.done()
        return SpaceSpec(names=names, model_dim=model_dim, normalization=norm)
    chunk_len = r.int_in('chunk_len', 1, 10_000)
    dt_s = r.number('dt_s', lo=0.0, hi=10.0, lo_open=True)
    mode = r.choice('mode', ACTION_MODES)
    r.done()
    return ActionSpec(names=names, model_dim=model_dim, normalization=norm,
                      chunk_len=chunk_len, dt_s=dt_s, mode=mode)


def _parse_camera(r: _Reader) -> CameraSpec:
    name = r.get('name', str)
    norms = []
    for nr in r.items('norms'):
        norms.append(ChannelNorm(mean=nr.floats('mean', 3), std=nr.floats('std', 3)))
        if any(s <= 0 for s in norms[-1].std):
            raise fail('invalid', f'{nr.where}.std', 'every std must be > 0')
        nr.done()
    if not norms:
        raise fail('invalid', f'{r.where}.norms', 'needs at least one normalization stream')
    cam = CameraSpec(
        name=name,
        height=r.int_in('height', 8, 4096),
        width=r.int_in('width', 8, 4096),
        channel_order=r.choice('channel_order', ('rgb', 'bgr'), 'rgb'),
        resize=r.choice('resize', RESIZE_MODES, 'bicubic'),
        crop_scale=r.number('crop_scale', lo=0.0, hi=1.0, default=1.0, lo_open=True),
        norms=tuple(norms),
        required=r.get('required', bool, True),
        blank=r.choice('blank', BLANK_VIEWS, 'zeros'),
    )
    r.done()
    return cam


def _parse_tensor(r: _Reader) -> TensorSpec:
    shape = r.get('shape', list)
    for i, d in enumerate(shape):
        if isinstance(d, bool) or not isinstance(d, (int, str)) or (isinstance(d, int) and d < 1):
            raise fail('invalid', f'{r.where}.shape[{i}]',
                        f'expected a positive int or a symbol name, got {d!r}')
    spec = TensorSpec(name=r.get('name', str), dtype=r.choice('dtype', DTYPES), shape=tuple(shape))
    r.done()
    return spec


def _parse_graph(r: _Reader) -> GraphSpec:
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
    if (role in LAYERED_ROLES) != (layers is not None):
        raise fail('invalid', f'{r.where}.layers', f'graphs of roles {LAYERED_ROLES}, and only '
                    'those, name the layers [start, end) they run')
    r.done()
    return GraphSpec(name=name, role=role, inputs=inputs, outputs=outputs,
                     variants=variants, layers=layers)


def _parse_layout_item(r: _Reader, cameras: set[str]) -> dict[str, Any]:
    kind = r.choice('kind', ('text', 'image', 'tokens'))
    item: dict[str, Any] = {'kind': kind}
    if kind == 'image':
        item['camera'] = r.choice('camera', tuple(sorted(cameras)))
        item['id'] = r.int_in('id', 0)
        item['count'] = r.int_in('count', 1)
    elif kind == 'tokens':
        ids = r.get('ids', list)
        if not ids or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids):
            raise fail('invalid', f'{r.where}.ids', f'expected non-negative token ids, got {ids}')
        item['ids'] = list(ids)
        item['repeat'] = r.int_in('repeat', 1, default=1)
    r.done()
    return item


def _parse_exits(r: _Reader) -> ExitSpec:
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
    r = _Reader(data, '')
    version = r.get('schema_version', int)
    if version != SCHEMA_VERSION:
        raise PackageError(
            'schema_version',
            f'manifest schema_version {version} is not supported: this vla_ros reads version '
            f'{SCHEMA_VERSION}. Re-export the package with this vla_ros, or install the vla_ros '
            'release that wrote it.')
    family = r.choice('family', FAMILIES)
    hr = r.sub('head')
    head = HeadSpec(type=hr.choice('type', HEAD_TYPES), config=hr.get('config', dict, {}))
    hr.done()
    cameras = tuple(_parse_camera(c) for c in r.items('cameras'))
    graphs_raw = data.get('graphs', []) if isinstance(data, dict) else []
    if not cameras and any(isinstance(g, dict) and g.get('role') == 'vision'
                           for g in graphs_raw):
        raise fail('invalid', 'cameras', 'a package with a vision graph needs a camera slot')
    unique(tuple(c.name for c in cameras), 'cameras')
    state = _parse_space(r.sub('state'), action=False)
    action = _parse_space(r.sub('action'), action=True)
    pr = r.sub('prompt')
    prompt = PromptSpec(
        tokenizer_file=pr.get('tokenizer_file', str), template=pr.get('template', str),
        max_length=pr.int_in('max_length', 1, 32768), pad_id=pr.int_in('pad_id', 0),
        lowercase=pr.get('lowercase', bool, False))
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
    files = {}
    for path, entry in r.get('files', dict, {}).items():
        er = _Reader(entry, f'files[{path!r}]')
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

