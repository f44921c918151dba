"""Configurations of the four VLA families, as frozen dataclasses validated on construction.

A VLA is vision encoder -> projector -> decoder with exit points -> action head. The config
travels with the weights (it is written into the model package's provenance and beside
checkpoints), so a model rebuilds from its own files. Sizes named in comments are those of the
published checkpoints (reference/seeds.md); the `tiny()` presets keep tests fast.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

FAMILY_HEADS = {
    'evo1': ('flow_dit',),
    'a1': ('flow_expert', 'mlp_regression'),
    'vla_adapter': ('bridge',),
    'edgevla': ('nar_tokens',),
}
VISION_KINDS = ('internvit', 'prismatic', 'molmo_clip', 'none')
GELU_KINDS = ('gelu_pytorch_tanh', 'gelu')
BIN_SCHEMES = ('centers', 'openvla')
TEXT_PADDING = ('right', 'left')
POSITIONS = ('mask', 'arange')
TIME_EMBEDDINGS = ('posemb_sincos', 'diffusion_policy')
IMAGE_MERGES = ('replace', 'add')
IMAGE_INDEXES = ('own', 'first')
# molmo_clip: A1's MultiModalPreprocessor crop modes (a1/data/model_preprocessor.py)
CROP_MODES = ('resize', 'overlap-and-resize-c2')


def _check(cond: bool, cls: str, name: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ValueError(f'{cls}.{name} = {value!r} is invalid: {allowed}')


@dataclass(frozen=True)
class LMConfig:
    """A Qwen2-family decoder (Qwen2 / Qwen2.5): RMSNorm, RoPE, GQA, SwiGLU."""

    hidden_size: int = 896  # Qwen2.5-0.5B
    num_layers: int = 14  # Evo-1 keeps the first 14 of 24
    num_heads: int = 14
    num_kv_heads: int = 2
    intermediate_size: int = 4864
    vocab_size: int = 151936
    rope_theta: float = 1_000_000.0
    rms_eps: float = 1e-6
    causal: bool = True  # our a1 presets run bidirectionally; A1's flow-matching LLM is causal
    # RoPE positions: 'mask' = cumsum(mask) - 1 (padding skipped; ours, A1's position_ids);
    # 'arange' = 0..T-1 whatever the mask (HF's default, what Evo-1 runs).
    positions: str = 'mask'

    def __post_init__(self) -> None:
        n = type(self).__name__
        for name in ('hidden_size', 'num_layers', 'num_heads', 'num_kv_heads',
                     'intermediate_size', 'vocab_size'):
            _check(getattr(self, name) >= 1, n, name, getattr(self, name), 'must be >= 1')
        _check(self.hidden_size % self.num_heads == 0, n, 'num_heads', self.num_heads,
               f'must divide hidden_size {self.hidden_size}')
        _check(self.num_heads % self.num_kv_heads == 0, n, 'num_kv_heads', self.num_kv_heads,
               f'must divide num_heads {self.num_heads}')
        _check(self.positions in POSITIONS, n, 'positions', self.positions, f'one of {POSITIONS}')

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class VisionConfig:
    """internvit: InternViT + pixel shuffle + MLP projector (InternVL3);
    prismatic: DINOv2-with-registers and SigLIP side by side, channel-concatenated, MLP
    projector (VLA-Adapter, EdgeVLA); molmo_clip: CLIP ViT, two layers concatenated, 2x2
    attention pooling with a mean query, MLP projector (A1 / Molmo)."""

    kind: str = 'internvit'
    image_size: int = 448
    patch_size: int = 14
    hidden_size: int = 1024  # InternViT-300M
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    # prismatic: the SigLIP tower beside DINOv2 (so400m: 1152 wide, 27 layers, 16 heads)
    siglip_hidden_size: int = 1152
    siglip_num_layers: int = 27
    siglip_num_heads: int = 16
    siglip_intermediate_size: int = 4304
    num_register_tokens: int = 4
    downsample_ratio: float = 0.5  # internvit pixel shuffle: 1024 patches -> 256 tokens
    feature_layers: tuple[int, ...] = (-1,)  # hidden-state indices used (molmo: (-2, -9))
    projector_hidden: int = 0  # 0: use the LM width
    # SigLIP MLP activation: transformers' default is the tanh approximation; timm's SigLIP
    # (VLA-Adapter, EdgeVLA) uses nn.GELU, the exact erf form ('gelu').
    siglip_act: str = 'gelu_pytorch_tanh'
    qkv_bias: bool = False  # internvit: InternViT-300M's qkv has a bias (InternVL3)
    # molmo_clip: the pooling's output width (A1/Molmo: the ViT width, 1024, from 2 x 1024
    # concatenated layers); 0: the concatenated width (ours).
    pool_dim: int = 0
    # molmo_clip: Molmo's `pad_embed` ("pad_and_partial_pad"): a (2, width) table added to the
    # concatenated ViT features of patches that are all padding (row 0) or partly padding
    # (row 1); the vision graph then takes each camera's per-patch image fraction as input.
    pad_embed: bool = False
    # molmo_clip: A1's crop mode. 'resize': one image block per camera (ours). 'overlap-and-
    # resize-c2': upstream fixes its tiling at 1 x 1, so each camera gives the global resized
    # image, then one crop that is the same resized image, as two image blocks; the crop's
    # image_masks are upstream's -1 fill (see MolmoClipEncoder).
    crop_mode: str = 'resize'

    def __post_init__(self) -> None:
        n = type(self).__name__
        _check(self.kind in VISION_KINDS, n, 'kind', self.kind, f'one of {VISION_KINDS}')
        _check(not self.pad_embed or self.kind == 'molmo_clip', n, 'pad_embed', self.pad_embed,
               "only the molmo_clip connector has a padding embedding")
        _check(self.crop_mode in CROP_MODES, n, 'crop_mode', self.crop_mode,
               f'one of {CROP_MODES}')
        _check(self.crop_mode == 'resize' or self.kind == 'molmo_clip', n, 'crop_mode',
               self.crop_mode, "'resize' unless the connector is molmo_clip")
        if self.kind == 'none':
            return
        _check(self.image_size % self.patch_size == 0, n, 'image_size', self.image_size,
               f'must be a multiple of patch_size {self.patch_size}')
        _check(self.hidden_size % self.num_heads == 0, n, 'num_heads', self.num_heads,
               'must divide hidden_size')
        _check(len(self.feature_layers) >= 1, n, 'feature_layers', self.feature_layers,
               'needs at least one layer')
        _check(self.siglip_act in GELU_KINDS, n, 'siglip_act', self.siglip_act,
               f'one of {GELU_KINDS}')
        if self.kind == 'internvit':
            side = self.image_size // self.patch_size
            _check((side * self.downsample_ratio) % 1 == 0, n, 'downsample_ratio',
                   self.downsample_ratio, f'must turn the {side}x{side} grid into whole tokens')
        if self.kind == 'molmo_clip':
            _check((self.image_size // self.patch_size) % 2 == 0, n, 'image_size',
                   self.image_size, '2x2 pooling needs an even patch grid')

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def blocks_per_camera(self) -> int:
        """Image blocks (of `tokens_per_image` visual tokens each) one camera gives."""
        return 2 if self.crop_mode == 'overlap-and-resize-c2' else 1

    @property
    def tokens_per_image(self) -> int:
        """Visual tokens per image block."""
        if self.kind == 'none':
            return 0
        if self.kind == 'internvit':
            return int(self.grid * self.downsample_ratio) ** 2
        if self.kind == 'molmo_clip':
            return (self.grid // 2) ** 2
        return self.grid ** 2


@dataclass(frozen=True)
class HeadConfig:
    """Action-head settings; each head type reads the fields it needs."""

    type: str = 'flow_dit'
    hidden_size: int = 896  # DiT width (Evo-1), expert width (A1: 1024), bridge width
    num_layers: int = 8  # DiT blocks (Evo-1); A1's expert and VLA-Adapter's policy follow the LM
    num_heads: int = 8
    intermediate_size: int = 3584
    state_hidden: int = 1024  # Evo-1 state encoder / mlp_head width
    num_action_queries: int = 64  # VLA-Adapter
    pro: bool = True  # VLA-Adapter-Pro blocks (separate K/V, RoPE); False: the original blocks
    num_bins: int = 256  # EdgeVLA action bins on [-1, 1]
    resnet_blocks: int = 2  # A1's MLPResNet output / regression head
    # Upstream conventions a converted checkpoint needs (defaults: our own models' behaviour).
    # feature_shift: the head reads positions this many tokens left of its spans. 1 =
    # VLA-Adapter's index math (task = the token before the first patch + all patches but the
    # last; queries = the last prompt token + all queries but the last) and EdgeVLA's causal-LM
    # shift (action j is read at the position before action token j).
    feature_shift: int = 0
    norm_last_features: bool = False  # bridge: the last block reads the final-normed state
    bf16_features: bool = False  # bridge: round the query features and proprio input to bf16
    # centers: num_bins uniform bins, value = the bin's centre; openvla: num_bins - 1 centres
    # of linspace(-1, 1, num_bins), the arg-max index clipped to num_bins - 2 (EdgeVLA).
    bin_scheme: str = 'centers'
    # Evo-1 as published: ReLU after the action encoder's W1 and W2 and inside mlp_head
    # (flow_matching.py); False keeps ours (none / SiLU / GELU there).
    relu_mlps: bool = False
    mlp_hidden: int = 0  # Evo-1 mlp_head width (its hidden_dim); 0: state_hidden
    # A1's expert: RoPE base (A1: the Qwen2Config default 1e4; 0 = the LM's), causal attention
    # inside the suffix (A1's 2d_attn_mask path), its time embedding ('diffusion_policy' =
    # A1's SinusoidalPositionalEncoding; 'posemb_sincos' = pi0's, ours), and a proprio token
    # in the LLM prompt filled by `proprio_projector` (A1 with use_proprio).
    rope_theta: float = 0.0
    causal_suffix: bool = False
    time_embedding: str = 'posemb_sincos'
    proprio_token: bool = False
    # A1's expert: the RoPE position of the first suffix token. 0: right after the prefix
    # (ours). A1 pads its prompt to `data.sequence_length` before the LLM (deploy and eval
    # collate with pad='to_max'), so its suffix positions start there, whatever the prompt.
    suffix_position_start: int = 0

    def __post_init__(self) -> None:
        n = type(self).__name__
        _check(self.feature_shift in (0, 1), n, 'feature_shift', self.feature_shift, '0 or 1')
        _check(self.suffix_position_start >= 0, n, 'suffix_position_start',
               self.suffix_position_start, 'must be >= 0 (0: right after the prefix)')
        _check(self.bin_scheme in BIN_SCHEMES, n, 'bin_scheme', self.bin_scheme,
               f'one of {BIN_SCHEMES}')


@dataclass(frozen=True)
class VLAConfig:
    family: str = 'evo1'
    lm: LMConfig = field(default_factory=LMConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    cameras: tuple[str, ...] = ('scene', 'wrist', 'side')
    state_dim: int = 24  # model width of the state vector (padded)
    action_dim: int = 24  # model width of one action (padded)
    chunk_len: int = 50  # H
    text_len: int = 32  # instruction tokens, padded
    exit_layers: tuple[int, ...] = ()  # () = every layer's output is an exit
    # Where the instruction's padding goes inside its span; 'left' keeps the last prompt token
    # right before the query / action span (upstream reads it there, see feature_shift).
    text_padding: str = 'right'
    # Token ids of the placeholders the prompt layout uses (set by the tokenizer).
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3
    image_token_id: int = 4
    query_token_id: int = 5  # VLA-Adapter action queries
    action_token_id: int = 6  # EdgeVLA / A1-regression action positions
    proprio_token_id: int = 7  # A1-regression proprio slot
    # Literal token runs of an upstream prompt, one before each image block (each camera's
    # `vision.blocks_per_camera` of them, in camera order) and one after the last (before the
    # text), e.g. Evo-1's `Image-i: <img>` ... `</img>` blocks or A1's BOS and <im_start> /
    # <im_end>. () = our layout (images, then text).
    prompt_blocks: tuple[tuple[int, ...], ...] = ()
    # Molmo's image block: each row of visual tokens is followed by this token (<im_col>);
    # -1: the visual tokens form one plain run (ours).
    image_col_token_id: int = -1
    # How visual tokens enter the embedding: 'replace' the placeholder embeddings (ours) or
    # 'add' to them (Molmo / A1 add the features to the <im_patch> embeddings).
    image_merge: str = 'replace'
    # Which blocks a camera's features land in: 'own' (ours) or 'first': A1's preprocessor,
    # whose prompt has no <|image|> token, offsets every image's feature indices by 0, so each
    # camera's block j is written into the first camera's block j; with repeated indices the
    # last camera's write lands (index_put on the CPU; undefined order on CUDA), and the later
    # cameras' blocks keep their bare <im_patch> embeddings. A1 checkpoints were trained so.
    image_index: str = 'own'

    def __post_init__(self) -> None:
        n = type(self).__name__
        _check(self.family in FAMILY_HEADS, n, 'family', self.family,
               f'one of {list(FAMILY_HEADS)}')
        _check(self.head.type in FAMILY_HEADS[self.family], n, 'head.type', self.head.type,
               f'{self.family} supports {FAMILY_HEADS[self.family]}')
        _check(self.text_padding in TEXT_PADDING, n, 'text_padding', self.text_padding,
               f'one of {TEXT_PADDING}')
        for name in ('state_dim', 'action_dim', 'chunk_len', 'text_len'):
            _check(getattr(self, name) >= 1, n, name, getattr(self, name), 'must be >= 1')
        no_vision = self.vision.kind == 'none'
        _check((len(self.cameras) == 0) == no_vision and len(set(self.cameras)) == len(
            self.cameras), n, 'cameras', self.cameras, 'needs distinct names, none exactly when '
               "vision.kind is 'none'")
        n_blocks = len(self.cameras) * self.vision.blocks_per_camera
        _check(not self.prompt_blocks or len(self.prompt_blocks) == n_blocks + 1, n,
               'prompt_blocks', self.prompt_blocks, f'one run before each of the {n_blocks} '
               'image blocks plus one after the last')
        _check(self.image_merge in IMAGE_MERGES, n, 'image_merge', self.image_merge,
               f'one of {IMAGE_MERGES}')
        _check(self.image_index in IMAGE_INDEXES and (self.image_index == 'own'
                                                      or self.image_merge == 'add'), n,
               'image_index', self.image_index, f"one of {IMAGE_INDEXES}; 'first' needs "
               "image_merge='add'")
        _check(self.image_col_token_id < 0 or self.vision.tokens_per_image
               == self.image_row_len ** 2, n, 'image_col_token_id', self.image_col_token_id,
               'row markers need a square grid of visual tokens')
        _check(self.head.time_embedding in TIME_EMBEDDINGS, n, 'head.time_embedding',
               self.head.time_embedding, f'one of {TIME_EMBEDDINGS}')
        exits = self.exits
        _check(list(exits) == sorted(set(exits)) and exits[-1] == self.lm.num_layers - 1
               and exits[0] >= 0, n, 'exit_layers', self.exit_layers,
               f'increasing layer indices ending at the last layer {self.lm.num_layers - 1}')
        if self.head.type == 'flow_expert':
            # The expert's queries attend over the decoder's grouped keys and values.
            _check(self.head.num_heads % self.lm.num_kv_heads == 0, n, 'head.num_heads',
                   self.head.num_heads, f'must be a multiple of lm.num_kv_heads '
                   f'{self.lm.num_kv_heads} (the expert shares the decoder\'s keys/values)')
        if self.family == 'edgevla':
            _check(self.chunk_len * self.action_dim <= 64, n, 'chunk_len', self.chunk_len,
                   'EdgeVLA decodes one token per action value; keep H * A <= 64')

    @property
    def exits(self) -> tuple[int, ...]:
        return self.exit_layers or tuple(range(self.lm.num_layers))

    @property
    def image_row_len(self) -> int:
        """Visual tokens per row of the (square) token grid."""
        return math.isqrt(self.vision.tokens_per_image)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VLAConfig:
        sub = {'lm': LMConfig, 'vision': VisionConfig, 'head': HeadConfig}
        kwargs = {}
        known = {f.name for f in fields(cls)}
        for key, value in data.items():
            if key not in known:
                raise ValueError(f'VLAConfig has no field {key!r}')
            if key in sub:
                value = sub[key](**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in value.items()})
            elif key == 'prompt_blocks':
                value = tuple(tuple(b) for b in value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[key] = value
        return cls(**kwargs)

    # --- presets ---------------------------------------------------------------------------

    @staticmethod
    def evo1(**overrides: Any) -> VLAConfig:
        """Evo-1 at full size: InternVL3-1B cut to 14 LM layers, 8-block DiT, 3 views."""
        return replace(VLAConfig(), **overrides)

    @staticmethod
    def tiny(family: str, **overrides: Any) -> VLAConfig:
        """A few-hundred-thousand-parameter model of a family, for tests."""
        lm = LMConfig(hidden_size=32, num_layers=4, num_heads=4, num_kv_heads=2,
                      intermediate_size=64, vocab_size=64)
        vision = {
            'evo1': VisionConfig('internvit', image_size=28, patch_size=7, hidden_size=16,
                                 num_layers=1, num_heads=2, intermediate_size=32),
            'a1': VisionConfig('molmo_clip', image_size=28, patch_size=7, hidden_size=16,
                               num_layers=3, num_heads=2, intermediate_size=32,
                               feature_layers=(-2, -3)),
        }.get(family, VisionConfig('prismatic', image_size=28, patch_size=7, hidden_size=16,
                                   num_layers=2, num_heads=2, intermediate_size=32,
                                   siglip_hidden_size=16, siglip_num_layers=2,
                                   siglip_num_heads=2, siglip_intermediate_size=32,
                                   feature_layers=(-2,)))
        head_type = FAMILY_HEADS[family][0]
        head = HeadConfig(type=head_type, hidden_size=32, num_layers=2, num_heads=4,
                          intermediate_size=64, state_hidden=32, num_action_queries=4,
                          num_bins=16)
        base = VLAConfig(family=family, lm=lm, vision=vision, head=head,
                         cameras=('scene', 'wrist'), state_dim=6, action_dim=6,
                         chunk_len=1 if family == 'edgevla' else 4, text_len=6,
                         exit_layers=(1, 2, 3))
        return replace(base, **overrides)
