"""The model-package manifest's schema: constants and frozen dataclasses, serialization.

A manifest describes everything the runtime needs to serve an exported VLA without the
code that trained it: camera slots, state/action spaces with normalization, chunking, exit
layers with calibrated thresholds, flow settings, the ONNX graphs and the files' hashes.

Owns the data types only. Parsing with validation is `parse.py`, cross-field checks
`consistency.py`, file-level checks (hashes, paths on disk, pickles) `files.py`. Imports
nothing beyond the standard library.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

SCHEMA_VERSION = 2  # written by this vla_ros
# Version 2 adds the optional segment_chain role; a version-1 package reads unchanged.
READABLE_VERSIONS = (1, 2)

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
               'head_segment', 'head_out', 'head', 'head_step_vjp', 'segment_chain')
# Optional: the flow head step's vector-Jacobian product (vla_ros/export/vjp.py), which
# rtc_guided merging runs; packages exported without --rtc-vjp lack it. segment_chain
# (schema 2): consecutive segments fused into one graph with the same weights and outputs
# (vla_ros/export/chain.py), run where no exit decision falls between them.
OPTIONAL_ROLES = ('head_step_vjp', 'segment_chain')
LAYERED_ROLES = ('segment', 'head_segment')  # graphs that tile the layers
RANGED_ROLES = LAYERED_ROLES + ('segment_chain',)  # graphs that name a range of layers
ROLE_SINCE = {'segment_chain': 2}  # roles newer than schema 1: the version that added them
PRECISIONS = ('fp32', 'fp16')
DTYPES = ('float32', 'float16', 'int64', 'int32', 'bool', 'uint8')
# cv2 interpolations, then PIL's (antialiased when shrinking; torchvision's Resize on a PIL
# image), then TensorFlow's scale_and_translate with antialias (tf.image.resize).
RESIZE_MODES = ('bicubic', 'bilinear', 'area', 'lanczos', 'nearest',
                'pil_bicubic', 'pil_bilinear', 'pil_lanczos', 'tf_lanczos3')
# Image steps before the final resize (CameraSpec.steps), with their parameters:
#   jpeg         {quality}: encode (libjpeg, 4:2:0) and decode with the fast integer IDCT, as
#                tf.image.encode_jpeg + tf.io.decode_image do (VLA-Adapter's eval resize)
#   resize       {height, width, method (a RESIZE_MODE)}, result rounded to uint8
#   center_crop  {area, method: 'tf_bilinear'}: the centred box of `area` (fraction), resized
#                back to the input size as tf.image.crop_and_resize, saturating to uint8
#   resize_pad   {size, patch, fill, method: 'torch_bilinear'}: A1 / Molmo's resize_and_pad:
#                scale to fit a size x size square keeping the aspect ratio (torch's
#                antialiased bilinear on [0, 1] floats, clipped), centre it on `fill`
#                (0-1, before normalization), unrounded; it also gives each patch x patch cell
#                its image fraction (the vision graph's patch_mask.<camera>). Last step only.
IMAGE_STEPS = {'jpeg': ('quality',), 'resize': ('height', 'width', 'method'),
               'center_crop': ('area', 'method'), 'resize_pad': ('size', 'patch', 'fill',
                                                                 'method')}
MISSING_VIEW = ('zeros', 'black')  # fill for an absent optional view, in the model's space
PADDING_SIDES = ('right', 'left')
NORM_KINDS = {
    # kind -> statistics it needs
    'identity': (),
    'bounds': ('min', 'max'),
    'bounds_q99': ('q01', 'q99'),
    'mean_std': ('mean', 'std'),
}
# l2 is A1's "L2", the RMS of the difference; l2_norm its Euclidean norm (what `l2` meant in
# packages calibrated before: parse.py reads those as l2_norm).
METRICS = ('cosine', 'l2', 'l2_norm', 'mean_abs', 'max_abs')
ACTION_MODES = ('absolute', 'delta')



@dataclass(frozen=True)
class ChannelNorm:
    """One normalization stream of an image: (x/255 - mean) / std per channel."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # Letterbox fill (RGB, 0-255) of this stream when the camera letterboxes (EdgeVLA pads
    # with each backbone's mean colour); None: the rounded mean.
    fill: tuple[int, int, int] | None = None


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
    required: bool = True  # a missing optional view is filled and masked (Evo-1)
    steps: tuple[dict[str, Any], ...] = ()  # IMAGE_STEPS applied in order before the resize
    letterbox: bool = False  # pad to a square (each stream's fill) before the final resize
    missing: str = 'zeros'  # MISSING_VIEW: zeros, or a black image normalized per stream

    @property
    def channels(self) -> int:
        return 3 * len(self.norms)


@dataclass(frozen=True)
class Normalization:
    """Maps raw values to the model's range. Statistics cover the named (unpadded) entries."""

    kind: str = 'identity'
    stats: dict[str, tuple[float, ...]] = field(default_factory=dict)
    clip: bool = False  # clamp normalized values to [-1, 1] (Evo-1 clamps state)
    # Per named entry: False leaves it un-normalized both ways (OpenVLA's `mask`: the
    # gripper of VLA-Adapter / EdgeVLA actions). () = every entry is normalized.
    mask: tuple[bool, ...] = ()
    eps: float = 1e-8  # added to (hi - lo) by the bounds kinds (EdgeVLA un-normalizes with 0)


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
class GripperSpec:
    """Post-processing of the gripper entry after de-normalization, in this order: rescale
    [0, 1] -> [-1, 1], binarize (sign), invert (negate); VLA-Adapter's LIBERO client applies
    all three (run_libero_eval.py)."""

    index: int
    rescale: bool = False
    binarize: bool = False
    invert: bool = False


@dataclass(frozen=True)
class ActionSpec(SpaceSpec):
    chunk_len: int = 1  # H: actions per chunk
    dt_s: float = 0.1  # time between consecutive actions of a chunk, as trained
    mode: str = 'absolute'  # absolute targets, or deltas from the state at observation time
    gripper: GripperSpec | None = None


@dataclass(frozen=True)
class PromptSpec:
    """How the model's token sequence is assembled; the sequence length is static.

    layout items, in order: {"kind": "text"} the instruction through `template`, tokenized,
    truncated or padded to `max_length` (padding is masked); {"kind": "image", "camera": c,
    "id": i, "count": n[, "cols": k, "col_id": j]} n placeholder tokens replaced by (or added
    to) camera c's visual tokens, with token j after every k of them when given (Molmo's rows);
    a camera may own several image items in a row (A1's global image, then its crop), filled in
    the order of the vision graph's tokens; {"kind": "tokens", "ids": [...], "repeat": r}
    literal ids (BOS, EOS, action queries...).
    """

    tokenizer_file: str
    template: str = '{instruction}'  # must contain {instruction}
    max_length: int = 64
    pad_id: int = 0
    lowercase: bool = False  # the instruction only (VLA-Adapter, EdgeVLA: task.lower())
    layout: tuple[dict[str, Any], ...] = ({'kind': 'text'},)
    # 'left' pads before the instruction so its last token sits right before what follows
    # (the positions skip padding, so the model sees the unpadded sequence either way).
    padding_side: str = 'right'

    @property
    def sequence_length(self) -> int:
        n = 0
        for item in self.layout:
            if item['kind'] == 'text':
                n += self.max_length
            elif item['kind'] == 'image':
                n += item['count'] + (item['count'] // item['cols'] if 'cols' in item else 0)
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
    # Action dims the metric reads: 'named' (ours) or 'all' model dims, padding included (A1's
    # ActionValueNet compares the whole fixed_action_dim vector).
    dims: str = 'named'


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
    # Evo-1: the padded action dims are multiplied by 0 in the noise, in each step's input and
    # in the result (its action_mask, 1 on the named dims).
    action_mask: bool = False


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
        if out['action']['gripper'] is None:
            del out['action']['gripper']
        for cam in out['cameras']:
            for norm in cam['norms']:
                if norm['fill'] is None:
                    del norm['fill']
        return out

    def with_threshold_sets(self, sets: tuple[ThresholdSet, ...],
                            default: str | None) -> Manifest:
        return replace(self, exits=replace(self.exits, threshold_sets=sets,
                                           default_threshold_set=default))

