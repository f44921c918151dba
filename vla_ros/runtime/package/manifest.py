"""The model-package manifest: schema, parsing with validation, and serialization.

A manifest describes everything the runtime needs to serve an exported VLA without the
code that trained it: camera slots, state/action spaces with normalization, chunking, exit
layers with calibrated thresholds, flow settings, the ONNX graphs and the files' hashes.

Parsing validates every field and the consistency between fields; every failure is a
`PackageError` naming the field, the value and what is allowed. File-level checks (hashes,
paths on disk, pickles) live in `package.py`. Imports numpy only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from vla_ros.runtime.errors import PackageError

SCHEMA_VERSION = 1

FAMILIES = ('evo1', 'a1', 'vla_adapter', 'edgevla')
# Head types, one per seed paper's action decoder (see reference/seeds.md).
HEAD_TYPES = (
    'flow_dit',        # Evo-1: cross-attention flow-matching DiT over mid-layer features
    'flow_expert',     # A1: flow-matching expert reading the backbone's per-layer keys/values
    'mlp_regression',  # A1's L1 regression head over action-token hidden states
    'bridge',          # VLA-Adapter: bridge attention over all-layer raw + ActionQuery features
    'nar_tokens',      # EdgeVLA: all action tokens decoded in one non-autoregressive forward
)
FLOW_HEADS = ('flow_dit', 'flow_expert')
GRAPH_ROLES = ('vision', 'embed', 'segment', 'head_context', 'head_step', 'head_embed',
               'head_segment', 'head_out', 'head')
LAYERED_ROLES = ('segment', 'head_segment')  # graphs that run a range of layers
PRECISIONS = ('fp32', 'fp16')
DTYPES = ('float32', 'float16', 'int64', 'int32', 'bool', 'uint8')
RESIZE_MODES = ('bicubic', 'bilinear', 'area', 'lanczos', 'nearest')
NORM_KINDS = {
    # kind -> statistics it needs
    'identity': (),
    'bounds': ('min', 'max'),
    'bounds_q99': ('q01', 'q99'),
    'mean_std': ('mean', 'std'),
}
METRICS = ('cosine', 'l2', 'mean_abs', 'max_abs')
ACTION_MODES = ('absolute', 'delta')


def _fail(kind: str, where: str, message: str) -> PackageError:
    return PackageError(kind, f'manifest {where}: {message}')


class _Reader:
    """Typed access to one JSON object, with errors that name the field's path."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise _fail('invalid', where, f'expected an object, got {type(data).__name__}')
        self.data = data
        self.where = where
        self.used: set[str] = set()

    def _path(self, key: str) -> str:
        return f'{self.where}.{key}' if self.where else key

    def get(self, key: str, types: type | tuple[type, ...], default: Any = ...) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise _fail('invalid', self._path(key), 'is required but missing')
            return default
        value = self.data[key]
        # bool is an int in Python; a flag is never a count.
        if isinstance(value, bool) and bool not in _as_tuple(types):
            raise _fail('invalid', self._path(key), f'expected {_names(types)}, got a boolean')
        if not isinstance(value, types):
            raise _fail('invalid', self._path(key),
                        f'expected {_names(types)}, got {type(value).__name__} {value!r:.60}')
        return value

    def choice(self, key: str, allowed: tuple[str, ...], default: Any = ...) -> str:
        value = self.get(key, str, default)
        if value not in allowed:
            raise _fail('invalid', self._path(key), f'{value!r} is not one of {list(allowed)}')
        return value

    def int_in(self, key: str, lo: int, hi: int | None = None, default: Any = ...) -> int:
        value = self.get(key, int, default)
        if value < lo or (hi is not None and value > hi):
            bound = f'[{lo}, {hi}]' if hi is not None else f'>= {lo}'
            raise _fail('invalid', self._path(key), f'{value} is outside {bound}')
        return value

    def number(self, key: str, lo: float | None = None, hi: float | None = None,
               default: Any = ..., lo_open: bool = False) -> float:
        value = float(self.get(key, (int, float), default))
        if not math.isfinite(value):
            raise _fail('non_finite', self._path(key), f'{value} is not finite')
        if lo is not None and (value < lo or (lo_open and value == lo)):
            op = '>' if lo_open else '>='
            raise _fail('invalid', self._path(key), f'{value} must be {op} {lo}')
        if hi is not None and value > hi:
            raise _fail('invalid', self._path(key), f'{value} must be <= {hi}')
        return value

    def floats(self, key: str, length: int | None = None, default: Any = ...) -> tuple[float, ...]:
        values = self.get(key, list, default)
        path = self._path(key)
        out = []
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise _fail('invalid', f'{path}[{i}]', f'expected a number, got {v!r:.40}')
            if not math.isfinite(v):
                raise _fail('non_finite', f'{path}[{i}]', f'{v} is not finite')
            out.append(float(v))
        if length is not None and len(out) != length:
            raise _fail('inconsistent', path, f'has {len(out)} values, expected {length}')
        return tuple(out)

    def strings(self, key: str, default: Any = ...) -> tuple[str, ...]:
        values = self.get(key, list, default)
        for i, v in enumerate(values):
            if not isinstance(v, str) or not v:
                raise _fail('invalid', f'{self._path(key)}[{i}]',
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
            raise _fail('invalid', self.where or '<root>', f'unknown field(s) {unknown}')


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _names(types: type | tuple[type, ...]) -> str:
    return ' or '.join(t.__name__ for t in _as_tuple(types))


def _unique(values: tuple[str, ...], where: str) -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise _fail('inconsistent', where, f'name {v!r} appears more than once')
        seen.add(v)


@dataclass(frozen=True)
class ChannelNorm:
    """One normalization stream of an image: (x/255 - mean) / std per channel."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class CameraSpec:
    """A camera slot of the model. The node maps ROS image topics onto these by name."""

    name: str
    height: int
    width: int
    channel_order: str = 'rgb'  # what the model was trained on
    resize: str = 'bicubic'
    crop_scale: float = 1.0  # center crop of this area fraction before resizing (1 = none)
    # Several streams stack along channels (Prismatic DINOv2 + SigLIP: 6 channels per view).
    norms: tuple[ChannelNorm, ...] = ()
    required: bool = True  # a missing optional view is zero-filled and masked (Evo-1)

    @property
    def channels(self) -> int:
        return 3 * len(self.norms)


@dataclass(frozen=True)
class Normalization:
    """Maps raw values to the model's range. Statistics cover the named (unpadded) entries."""

    kind: str = 'identity'
    stats: dict[str, tuple[float, ...]] = field(default_factory=dict)
    clip: bool = False  # clamp normalized values to [-1, 1] (Evo-1 clamps state)


@dataclass(frozen=True)
class SpaceSpec:
    """A state or action vector: meaning per index, padding to the model's width."""

    names: tuple[str, ...]
    model_dim: int  # >= len(names); the model sees zeros in the padded tail
    normalization: Normalization = Normalization()

    @property
    def dim(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class ActionSpec(SpaceSpec):
    chunk_len: int = 1  # H: actions per chunk
    dt_s: float = 0.1  # time between consecutive actions of a chunk, as trained
    mode: str = 'absolute'  # absolute targets, or deltas from the state at observation time


@dataclass(frozen=True)
class PromptSpec:
    """How the model's token sequence is assembled; the sequence length is static.

    layout items, in order: {"kind": "text"} the instruction through `template`, tokenized,
    truncated or padded to `max_length` (padding is masked); {"kind": "image", "camera": c,
    "id": i, "count": n} n placeholder tokens replaced by camera c's visual tokens;
    {"kind": "tokens", "ids": [...], "repeat": r} literal ids (BOS, EOS, action queries...).
    """

    tokenizer_file: str
    template: str = '{instruction}'  # must contain {instruction}
    max_length: int = 64
    pad_id: int = 0
    lowercase: bool = False
    layout: tuple[dict[str, Any], ...] = ({'kind': 'text'},)

    @property
    def sequence_length(self) -> int:
        n = 0
        for item in self.layout:
            if item['kind'] == 'text':
                n += self.max_length
            elif item['kind'] == 'image':
                n += item['count']
            else:
                n += len(item['ids']) * item.get('repeat', 1)
        return n


@dataclass(frozen=True)
class ThresholdSet:
    """Calibrated early-exit thresholds. The first exit is the reference (A1's anchor):
    values[k] is checked at exit k + 1, which stops when the metric between its action and
    exit k's is <= values[k]; a negative value never stops. The last exit always stops."""

    name: str
    metric: str
    values: tuple[float, ...]  # one per exit except the last
    expected_compute_fraction: float  # of the full backbone, on the calibration data
    calibration: dict[str, Any] = field(default_factory=dict)  # how it was made


@dataclass(frozen=True)
class ExitSpec:
    num_layers: int
    layers: tuple[int, ...]  # 0-based index of the layer after which an exit sits
    threshold_sets: tuple[ThresholdSet, ...] = ()
    default_threshold_set: str | None = None


@dataclass(frozen=True)
class FlowSpec:
    """Flow-matching sampling settings. `noise_at` is the time where x is pure noise:
    Evo-1 integrates t 0 (noise) -> 1 (data); A1 and pi0 integrate t 1 (noise) -> 0."""

    noise_at: int  # 0 or 1
    noise: str  # 'uniform' (Evo-1, U[-1, 1]) or 'gaussian' (A1)
    num_steps: int = 10
    truncated_steps: int = 2  # per exit in inter-layer truncated flow matching (A1)
    warm_start: bool = True


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int | str, ...]  # ints are fixed, strings are symbolic (e.g. 'batch')


@dataclass(frozen=True)
class GraphFile:
    file: str
    data_files: tuple[str, ...] = ()  # ONNX external-data files


@dataclass(frozen=True)
class GraphSpec:
    name: str
    role: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    variants: dict[str, GraphFile]  # precision -> files; I/O is the same for all
    layers: tuple[int, int] | None = None  # [start, end) layers, LAYERED_ROLES only


@dataclass(frozen=True)
class HeadSpec:
    type: str
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    name: str
    family: str
    head: HeadSpec
    cameras: tuple[CameraSpec, ...]
    state: SpaceSpec
    action: ActionSpec
    prompt: PromptSpec
    exits: ExitSpec
    graphs: tuple[GraphSpec, ...]
    flow: FlowSpec | None = None
    embodiment: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    files: dict[str, FileEntry] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def graph(self, name: str) -> GraphSpec:
        for g in self.graphs:
            if g.name == name:
                return g
        raise KeyError(f'package {self.name!r} has no graph {name!r}; '
                       f'graphs: {[g.name for g in self.graphs]}')

    def graphs_with_role(self, role: str) -> tuple[GraphSpec, ...]:
        return tuple(g for g in self.graphs if g.role == role)

    def threshold_set(self, name: str | None = None) -> ThresholdSet | None:
        name = name or self.exits.default_threshold_set
        if name is None:
            return None
        for ts in self.exits.threshold_sets:
            if ts.name == name:
                return ts
        raise KeyError(f'package {self.name!r} has no threshold set {name!r}; sets: '
                       f'{[t.name for t in self.exits.threshold_sets]}')

    def referenced_files(self) -> set[str]:
        refs = {self.prompt.tokenizer_file}
        for g in self.graphs:
            for v in g.variants.values():
                refs.add(v.file)
                refs.update(v.data_files)
        return refs

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for g in out['graphs']:
            if g['layers'] is None:
                del g['layers']
        if out['flow'] is None:
            del out['flow']
        return out

    def with_threshold_sets(self, sets: tuple[ThresholdSet, ...],
                            default: str | None) -> Manifest:
        return replace(self, exits=replace(self.exits, threshold_sets=sets,
                                           default_threshold_set=default))


# --- parsing ---------------------------------------------------------------------------------


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
        raise _fail('invalid', f'{r.where}.stats.std', 'every std must be > 0')
    lo_hi = {'bounds': ('min', 'max'), 'bounds_q99': ('q01', 'q99')}.get(kind)
    if lo_hi:
        lo, hi = stats[lo_hi[0]], stats[lo_hi[1]]
        bad = [i for i, (a, b) in enumerate(zip(lo, hi, strict=True)) if a > b]
        if bad:
            raise _fail('inconsistent', f'{r.where}.stats',
                        f'{lo_hi[0]} > {lo_hi[1]} at indices {bad}')
    return Normalization(kind=kind, stats=stats, clip=clip)


def _parse_space(r: _Reader, action: bool) -> SpaceSpec:
    names = r.strings('names')
    if not names:
        raise _fail('invalid', f'{r.where}.names', 'must name at least one entry')
    _unique(names, f'{r.where}.names')
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
            raise _fail('invalid', f'{nr.where}.std', 'every std must be > 0')
        nr.done()
    if not norms:
        raise _fail('invalid', f'{r.where}.norms', 'needs at least one normalization stream')
    cam = CameraSpec(
        name=name,
        height=r.int_in('height', 8, 4096),
        width=r.int_in('width', 8, 4096),
        channel_order=r.choice('channel_order', ('rgb', 'bgr'), 'rgb'),
        resize=r.choice('resize', RESIZE_MODES, 'bicubic'),
        crop_scale=r.number('crop_scale', lo=0.0, hi=1.0, default=1.0, lo_open=True),
        norms=tuple(norms),
        required=r.get('required', bool, True),
    )
    r.done()
    return cam


def _parse_tensor(r: _Reader) -> TensorSpec:
    shape = r.get('shape', list)
    for i, d in enumerate(shape):
        if isinstance(d, bool) or not isinstance(d, (int, str)) or (isinstance(d, int) and d < 1):
            raise _fail('invalid', f'{r.where}.shape[{i}]',
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
        raise _fail('invalid', f'{r.where}.outputs', 'a graph needs at least one output')
    _unique(tuple(t.name for t in inputs), f'{r.where}.inputs')
    _unique(tuple(t.name for t in outputs), f'{r.where}.outputs')
    variants_r = r.sub('variants')
    variants = {}
    for precision in list(variants_r.data):
        if precision not in PRECISIONS:
            raise _fail('invalid', f'{variants_r.where}', f'precision {precision!r} is not one '
                        f'of {list(PRECISIONS)}')
        vr = variants_r.sub(precision)
        variants[precision] = GraphFile(file=vr.get('file', str),
                                        data_files=vr.strings('data_files', ()))
        vr.done()
    variants_r.done()
    if 'fp32' not in variants:
        raise _fail('invalid', variants_r.where, 'every graph needs an fp32 variant')
    layers = r.get('layers', list, None)
    if layers is not None:
        if len(layers) != 2 or not all(isinstance(x, int) and not isinstance(x, bool)
                                       for x in layers) or not 0 <= layers[0] < layers[1]:
            raise _fail('invalid', f'{r.where}.layers', f'expected [start, end) with '
                        f'0 <= start < end, got {layers!r}')
        layers = (layers[0], layers[1])
    if (role in LAYERED_ROLES) != (layers is not None):
        raise _fail('invalid', f'{r.where}.layers', f'graphs of roles {LAYERED_ROLES}, and only '
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
            raise _fail('invalid', f'{r.where}.ids', f'expected non-negative token ids, got {ids}')
        item['ids'] = list(ids)
        item['repeat'] = r.int_in('repeat', 1, default=1)
    r.done()
    return item


def _parse_exits(r: _Reader) -> ExitSpec:
    num_layers = r.int_in('num_layers', 1, 1000)
    layers = tuple(r.get('layers', list))
    where = f'{r.where}.layers'
    if not layers or any(isinstance(x, bool) or not isinstance(x, int) for x in layers):
        raise _fail('invalid', where, f'expected a non-empty list of layer indices, got '
                    f'{layers!r}')
    if list(layers) != sorted(set(layers)):
        raise _fail('invalid', where, f'must be strictly increasing, got {list(layers)}')
    if layers[0] < 0 or layers[-1] != num_layers - 1:
        raise _fail('inconsistent', where, f'must lie in [0, {num_layers - 1}] and end at the '
                    f'last layer {num_layers - 1}; got {list(layers)}')
    sets = []
    for sr in r.items('threshold_sets', []):
        # Metrics are >= 0, so a negative threshold means "never exit here".
        values = sr.floats('values', len(layers) - 1)
        sets.append(ThresholdSet(
            name=sr.get('name', str), metric=sr.choice('metric', METRICS), values=values,
            expected_compute_fraction=sr.number('expected_compute_fraction', 0.0, 1.0,
                                                lo_open=True),
            calibration=sr.get('calibration', dict, {}),
        ))
        sr.done()
    _unique(tuple(s.name for s in sets), f'{r.where}.threshold_sets')
    default = r.get('default_threshold_set', (str, type(None)), None)
    if default is not None and default not in {s.name for s in sets}:
        raise _fail('inconsistent', f'{r.where}.default_threshold_set',
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
    if not cameras:
        raise _fail('invalid', 'cameras', 'a VLA needs at least one camera slot')
    _unique(tuple(c.name for c in cameras), 'cameras')
    state = _parse_space(r.sub('state'), action=False)
    action = _parse_space(r.sub('action'), action=True)
    pr = r.sub('prompt')
    prompt = PromptSpec(
        tokenizer_file=pr.get('tokenizer_file', str), template=pr.get('template', str),
        max_length=pr.int_in('max_length', 1, 32768), pad_id=pr.int_in('pad_id', 0),
        lowercase=pr.get('lowercase', bool, False))
    if '{instruction}' not in prompt.template:
        raise _fail('invalid', 'prompt.template', 'must contain {instruction}')
    layout = tuple(_parse_layout_item(it, {c.name for c in cameras})
                   for it in pr.items('layout', [{'kind': 'text'}]))
    if sum(item['kind'] == 'text' for item in layout) != 1:
        raise _fail('invalid', 'prompt.layout', 'needs exactly one text item')
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
            warm_start=fr.get('warm_start', bool, True))
        fr.done()
    graphs = tuple(_parse_graph(g) for g in r.items('graphs'))
    files = {}
    for path, entry in r.get('files', dict, {}).items():
        er = _Reader(entry, f'files[{path!r}]')
        sha = er.get('sha256', str)
        if len(sha) != 64 or any(c not in '0123456789abcdef' for c in sha):
            raise _fail('invalid', f'files[{path!r}].sha256', 'expected 64 lowercase hex digits')
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


# --- cross-field consistency -------------------------------------------------------------------


def _check_dim(g: GraphSpec, t: TensorSpec, axis: int, expected: int, what: str) -> None:
    if len(t.shape) < abs(axis):
        raise _fail('inconsistent', f'graphs[{g.name}].{t.name}',
                    f'rank {len(t.shape)} is too small for {what}')
    d = t.shape[axis]
    if isinstance(d, int) and d != expected:
        raise _fail('inconsistent', f'graphs[{g.name}].{t.name}.shape',
                    f'{list(t.shape)}: dimension {axis} is {d}, but {what} is {expected}')


def _check_tiling(m: Manifest, segments: list[GraphSpec]) -> None:
    if not segments:
        return
    expected_start = 0
    for g in segments:
        if g.layers[0] != expected_start:
            raise _fail('inconsistent', f'graphs[{g.name}].layers',
                        f'starts at {g.layers[0]}; {g.role} graphs must tile layers '
                        f'0..{m.exits.num_layers - 1} without gaps or overlap '
                        f'(expected start {expected_start})')
        expected_start = g.layers[1]
    if expected_start != m.exits.num_layers:
        raise _fail('inconsistent', 'graphs', f'{segments[0].role} graphs end at layer '
                    f'{expected_start}, the backbone has {m.exits.num_layers} layers')
    ends = {g.layers[1] - 1 for g in segments}
    missing = [layer for layer in m.exits.layers if layer not in ends]
    if missing:
        raise _fail('inconsistent', 'exits.layers', f'exit layers {missing} do not end a '
                    f'{segments[0].role} graph; their ends are {sorted(ends)}')


def check_consistency(m: Manifest) -> None:
    """Checks that the parts of a manifest agree with each other."""
    if (m.head.type in FLOW_HEADS) != (m.flow is not None):
        raise _fail('inconsistent', 'flow', f'head type {m.head.type!r} '
                    f'{"needs" if m.head.type in FLOW_HEADS else "takes no"} flow settings')
    _unique(tuple(g.name for g in m.graphs), 'graphs')
    if not m.graphs:
        raise _fail('invalid', 'graphs', 'a package needs at least one graph')
    # Segments (and head segments) tile the backbone exactly, with a boundary after each exit.
    for role in LAYERED_ROLES:
        _check_tiling(m, sorted(m.graphs_with_role(role), key=lambda g: g.layers))
    cams = {c.name: c for c in m.cameras}
    for g in m.graphs:
        for t in g.inputs + g.outputs:
            if t.name.startswith('image.'):
                cam = cams.get(t.name[len('image.'):])
                if cam is None:
                    raise _fail('inconsistent', f'graphs[{g.name}].{t.name}',
                                f'names no camera slot; slots are {sorted(cams)}')
                _check_dim(g, t, -1, cam.width, f'camera {cam.name!r} width')
                _check_dim(g, t, -2, cam.height, f'camera {cam.name!r} height')
                _check_dim(g, t, -3, cam.channels, f'camera {cam.name!r} channels')
            elif t.name == 'state':
                _check_dim(g, t, -1, m.state.model_dim, 'state.model_dim')
            elif t.name in ('input_ids', 'attention_mask'):
                _check_dim(g, t, -1, m.prompt.sequence_length, 'the prompt layout length')
            elif t.name in ('actions', 'noisy_actions', 'velocity'):
                _check_dim(g, t, -1, m.action.model_dim, 'action.model_dim')
                _check_dim(g, t, -2, m.action.chunk_len, 'action.chunk_len')
    for ts in m.exits.threshold_sets:
        if len(ts.values) != len(m.exits.layers) - 1:
            raise _fail('inconsistent', f'exits.threshold_sets[{ts.name}]',
                        f'{len(ts.values)} values for {len(m.exits.layers)} exits')
