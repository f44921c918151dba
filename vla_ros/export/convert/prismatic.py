"""What VLA-Adapter and EdgeVLA share: Prismatic's fused DINOv2 + SigLIP vision towers (timm
modules upstream) mapped onto our transformers towers, their shapes read from the tensors,
and the helpers both converters use (statistics, prompt split, exit layers).

timm -> transformers (fidelity.md §2):
  DINOv2-reg: cls_token, reg_token -> register_tokens, pos_embed (1, N, D) -> position
    embeddings (1, 1 + N, D) with a zero row for the class token (timm's no_embed_class adds
    no position to it), blocks.N.attn.qkv -> q/k/v_proj, attn.proj -> o_proj,
    ls1/ls2.{gamma|scale_factor} -> layer_scale1/2.lambda1, norm -> layernorm
  SigLIP: pos_embed (1, N, D) -> position_embedding (N, D), attn.qkv -> q/k/v_proj, proj ->
    out_proj, norm1/2 -> layer_norm1/2, norm -> post_layernorm, attn_pool (MAP head, unused
    by the features) -> head (q and kv fused into in_proj)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from vla_ros.export.convert import ConvertError
from vla_ros.export.convert.keys import KeyMap
from vla_ros.model.config import VisionConfig
from vla_ros.runtime.package.manifest import Normalization

# Heads of the timm models Prismatic names (not recoverable from the tensors).
TIMM_HEADS = {'vit_large_patch14_reg4_dinov2.lvd142m': 16, 'vit_so400m_patch14_siglip_224': 16}
DINO_ID, SIGLIP_ID = 'vit_large_patch14_reg4_dinov2.lvd142m', 'vit_so400m_patch14_siglip_224'
# Tensors of ours no upstream tensor fills (HF's masked-image-modelling token).
IGNORE_MISSING = ('vision.featurizer.embeddings.mask_token',)


def _blocks(w: dict, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r'blocks\.(\d+)\.')
    found = {int(m.group(1)) for k in w if (m := pattern.match(k))}
    if not found:
        raise ConvertError(f'no vision blocks under {prefix!r} in the checkpoint')
    return max(found) + 1


def vision_config(w: dict, dino: str, siglip: str, image_size: int,
                  heads: dict[str, int]) -> VisionConfig:
    """Our VisionConfig from the tensors under `dino` / `siglip` (upstream prefixes)."""
    d_w = w[dino + 'cls_token'].shape[-1]
    s_w = w[siglip + 'patch_embed.proj.weight'].shape[0]
    patch = w[dino + 'patch_embed.proj.weight'].shape[-1]
    return VisionConfig(
        'prismatic', image_size=image_size, patch_size=patch, hidden_size=d_w,
        num_layers=_blocks(w, dino), num_heads=heads[DINO_ID],
        intermediate_size=w[dino + 'blocks.0.mlp.fc1.weight'].shape[0],
        siglip_hidden_size=s_w, siglip_num_layers=_blocks(w, siglip),
        siglip_num_heads=heads[SIGLIP_ID],
        siglip_intermediate_size=w[siglip + 'blocks.0.mlp.fc1.weight'].shape[0],
        num_register_tokens=w[dino + 'reg_token'].shape[1], feature_layers=(-2,),
        siglip_act='gelu', projector_hidden=0)


def timm_heads(config: dict) -> dict[str, int]:
    """Heads per timm model: the published ones, or the `_tiny_vision_overrides` a test
    checkpoint's config names."""
    heads = dict(TIMM_HEADS)
    for model_id, kw in config.get('_tiny_vision_overrides', {}).items():
        if isinstance(kw, dict) and 'num_heads' in kw:
            heads[model_id] = int(kw['num_heads'])
    return heads


def _split_qkv(km: KeyMap, src: str, dst: tuple[str, str, str]) -> None:
    for kind in ('weight', 'bias'):
        q, k, v = km.get(f'{src}.{kind}').chunk(3, dim=0)
        for name, t in zip(dst, (q, k, v), strict=True):
            km.put(f'{name}.{kind}', t)


def _pair(km: KeyMap, src: str, dst: str) -> None:
    km.take(src + '.weight', dst + '.weight')
    km.take(src + '.bias', dst + '.bias')


def map_dino(km: KeyMap, up: str, ours: str, depth: int) -> None:
    km.take(up + 'cls_token', ours + 'embeddings.cls_token')
    km.take(up + 'reg_token', ours + 'embeddings.register_tokens')
    km.take(up + 'pos_embed', ours + 'embeddings.position_embeddings',
            lambda t: torch.cat([torch.zeros_like(t[:, :1]), t], dim=1))
    _pair(km, up + 'patch_embed.proj', ours + 'embeddings.patch_embeddings.projection')
    for i in range(depth):
        b, o = f'{up}blocks.{i}.', f'{ours}encoder.layer.{i}.'
        _split_qkv(km, b + 'attn.qkv', tuple(o + f'attention.{p}_proj' for p in 'qkv'))
        _pair(km, b + 'attn.proj', o + 'attention.o_proj')
        for n in (1, 2):
            key = next((b + f'ls{n}.{s}' for s in ('gamma', 'scale_factor')
                        if b + f'ls{n}.{s}' in km.upstream), b + f'ls{n}.gamma')
            km.take(key, o + f'layer_scale{n}.lambda1')
            _pair(km, b + f'norm{n}', o + f'norm{n}')
            _pair(km, b + f'mlp.fc{n}', o + f'mlp.fc{n}')
    _pair(km, up + 'norm', ours + 'layernorm')


def map_siglip(km: KeyMap, up: str, ours: str, depth: int) -> None:
    _pair(km, up + 'patch_embed.proj', ours + 'embeddings.patch_embedding')
    km.take(up + 'pos_embed', ours + 'embeddings.position_embedding.weight', lambda t: t[0])
    for i in range(depth):
        b, o = f'{up}blocks.{i}.', f'{ours}encoder.layers.{i}.'
        _split_qkv(km, b + 'attn.qkv', tuple(o + f'self_attn.{p}_proj' for p in 'qkv'))
        _pair(km, b + 'attn.proj', o + 'self_attn.out_proj')
        for n in (1, 2):
            _pair(km, b + f'norm{n}', o + f'layer_norm{n}')
            _pair(km, b + f'mlp.fc{n}', o + f'mlp.fc{n}')
    _pair(km, up + 'norm', ours + 'post_layernorm')
    a, h = up + 'attn_pool.', ours + 'head.'
    if a + 'latent' in km.upstream:
        km.take(a + 'latent', h + 'probe')
        for kind in ('weight', 'bias'):
            km.put(f'{h}attention.in_proj_{kind}',
                   torch.cat([km.get(f'{a}q.{kind}'), km.get(f'{a}kv.{kind}')], dim=0))
        _pair(km, a + 'proj', h + 'attention.out_proj')
        _pair(km, a + 'norm', h + 'layernorm')
        _pair(km, a + 'mlp.fc1', h + 'mlp.fc1')
        _pair(km, a + 'mlp.fc2', h + 'mlp.fc2')


def map_vision(km: KeyMap, cfg: VisionConfig, dino: str, siglip: str) -> None:
    map_dino(km, dino, 'vision.featurizer.', cfg.num_layers)
    map_siglip(km, siglip, 'vision.fused_featurizer.', cfg.siglip_num_layers)


def read_stats(path: Path) -> tuple[str, dict]:
    """The one dataset of an OpenVLA `dataset_statistics.json`: (unnorm_key, its stats)."""
    if not path.is_file():
        raise ConvertError(f'{path} is missing: the normalization statistics are needed')
    data = json.loads(path.read_text())
    keys = [k for k, v in data.items() if isinstance(v, dict) and 'action' in v]
    if len(keys) != 1:
        raise ConvertError(f'{path}: expected statistics of one dataset, found {keys}; keep '
                           'the entry of the dataset the checkpoint is deployed on')
    return keys[0], data[keys[0]]


def q99_norm(stats: dict, clip: bool, eps: float) -> Normalization:
    """BOUNDS_Q99 with OpenVLA's `mask` (False: left raw)."""
    mask = tuple(bool(m) for m in stats.get('mask', ()))
    if mask and all(mask):
        mask = ()
    return Normalization(kind='bounds_q99',
                         stats={'q01': tuple(map(float, stats['q01'])),
                                'q99': tuple(map(float, stats['q99']))},
                         clip=clip, mask=mask, eps=eps)


def split_prompt(tokenizer, prompt: str, example: str) -> tuple[int, str]:
    """(first token id, the template's rest): upstream puts the image patches after the first
    prompt token, so it becomes a fixed layout token and the rest the text template. Checked
    on `example` that tokenizing the rest reproduces the full prompt's ids."""
    full = tokenizer.encode(prompt.format(instruction=example), add_special_tokens=False)
    first = full.ids[0]
    lead = tokenizer.decode([first], skip_special_tokens=False)
    if not prompt.startswith(lead):
        raise ConvertError(f'the prompt template does not start with its first token {lead!r}')
    rest = prompt[len(lead):]
    again = tokenizer.encode(rest.format(instruction=example), add_special_tokens=False).ids
    if again != full.ids[1:]:
        raise ConvertError('tokenizing the prompt without its first token changes the ids; '
                           'this tokenizer cannot use the split layout')
    return first, rest


def quarter_exits(num_layers: int) -> tuple[int, ...]:
    """Exits after each quarter of the decoder (upstream has none; ours for early exit)."""
    return tuple(sorted({max(round(num_layers * k / 4) - 1, 0) for k in (1, 2, 3, 4)}))
