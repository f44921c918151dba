"""Evo-1 (MINT-SJTU/Evo-1) checkpoints -> our checkpoint directory.

Published layout (`scripts/train.py save_checkpoint`, `Evo1_server.load_model_and_normalizer`):
  config.json       EvoConfig.to_dict() (horizon, per_action_dim, state_dim, embed_dim,
                    hidden_dim, state_hidden_dim, num_heads, num_layers, image_size, ...)
  norm_stats.json   {arm_key: {dataset_key: {"observation.state"|"action": {min, max, ...}}}}
  weights           *.safetensors (or a shard index), or DeepSpeed mp_rank_00_model_states.pt
                    (["module"]) / checkpoint.pt (["model_state_dict"]), keys `embedder.model.
                    {vision_model,mlp1,language_model.model}.*` and `action_head.*`
  tokenizer.json    InternVL3-1B's tokenizer (with <img>, </img>, <IMG_CONTEXT>)
The converted model computes what upstream computes (reference/fidelity.md §1 Evo-1): ReLU in
the action encoder and mlp_head, InternViT's qkv bias, the `Image-i: <img>...</img>` prompt
padded to 1024 tokens, HF arange positions, the action mask, 50 flow steps, and the server's
conventions (cv2 bilinear resize, its BGR swap of RGB input, a missing view as a black frame).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vla_ros.export.convert import ConvertError
from vla_ros.export.convert.keys import KeyMap, safetensors_in

LM = 'embedder.model.language_model.model.'
VIT = 'embedder.model.vision_model.'
MLP1 = 'embedder.model.mlp1.'
CAMERAS = ('image_1', 'image_2', 'image_3')  # the server always takes 3 views
MAX_TEXT_LENGTH = 1024  # InternVL3Embedder.max_text_length
# InternVL3-1B's language model (Qwen2.5-0.5B) and vision tower (InternViT-300M): the parts of
# their config that the weights do not imply. A `vlm_llm_config*` / `_vision_config*` block in
# config.json overrides them (tiny test models).
QWEN_05B = {'num_attention_heads': 14, 'num_key_value_heads': 2, 'rope_theta': 1e6,
            'rms_norm_eps': 1e-6}
INTERNVIT_300M = {'num_attention_heads': 16, 'downsample_ratio': 0.5}
NORM_KINDS = {'bounds': ('bounds', 'min', 'max'), 'bounds_q99': ('bounds_q99', 'q01', 'q99'),
              'normal': ('mean_std', 'mean', 'std')}


def detect(src: Path) -> bool:
    cfg = src / 'config.json'
    if not (cfg.is_file() and (src / 'norm_stats.json').is_file()):
        return False
    try:
        data = json.loads(cfg.read_text())
    except ValueError:
        return False
    return 'InternVL' in str(data.get('vlm_name', '')) or data.get('action_head') == 'flowmatching'


def _weights(src: Path, progress: bool) -> dict[str, torch.Tensor]:
    found = safetensors_in(src, progress)
    if found is not None:
        return found
    for pt, key in (('mp_rank_00_model_states.pt', 'module'), ('checkpoint.pt',
                                                                 'model_state_dict')):
        hits = sorted(src.rglob(pt))
        if hits:
            try:
                obj = torch.load(str(hits[-1]), map_location='cpu', weights_only=True)
            except Exception as e:  # torch raises UnpicklingError / RuntimeError variants
                raise ConvertError(f'{hits[-1]}: not loadable weights-only ({e}); re-save its '
                                   f'["{key}"] state dict as safetensors') from e
            if not isinstance(obj, dict) or key not in obj:
                raise ConvertError(f'{hits[-1]}: no "{key}" entry')
            tmp = {k: v for k, v in obj[key].items() if isinstance(v, torch.Tensor)}
            return tmp
    raise ConvertError(f'{src}: no weights (*.safetensors, mp_rank_00_model_states.pt or '
                       'checkpoint.pt)')


def _stats(src: Path, norm_type: str) -> tuple[str, dict, dict, str]:
    data = json.loads((src / 'norm_stats.json').read_text())
    arm, entry = next(iter(data.items()))
    dataset = ''
    if 'action' not in entry:  # two levels: arm_key -> dataset_key -> stats
        dataset, entry = next(iter(entry.items()))
    if norm_type not in NORM_KINDS:
        raise ConvertError(f'normalization_type {norm_type!r} is not one of {list(NORM_KINDS)}')
    kind, lo, hi = NORM_KINDS[norm_type]
    state, action = entry['observation.state'], entry['action']
    return kind, {lo: state[lo], hi: state[hi]}, {lo: action[lo], hi: action[hi]}, \
        f'{arm}/{dataset}' if dataset else arm


def _layers(weights: dict, prefix: str) -> int:
    ids = {int(k[len(prefix):].split('.')[0]) for k in weights if k.startswith(prefix)}
    return max(ids) + 1 if ids else 0


def build_config(cfg: dict, weights: dict, tok, text_len: int, blocks) -> object:
    from vla_ros.model.config import HeadConfig, LMConfig, VisionConfig, VLAConfig

    llm = {**QWEN_05B, **(cfg.get('vlm_llm_config') or cfg.get('vlm_llm_config_tiny') or {})}
    emb = weights[LM + 'embed_tokens.weight']
    n_layers = _layers(weights, LM + 'layers.')
    lm = LMConfig(hidden_size=emb.shape[1], num_layers=n_layers,
                  num_heads=llm['num_attention_heads'], num_kv_heads=llm['num_key_value_heads'],
                  intermediate_size=weights[LM + 'layers.0.mlp.gate_proj.weight'].shape[0],
                  vocab_size=emb.shape[0], rope_theta=float(llm['rope_theta']),
                  rms_eps=float(llm['rms_norm_eps']), causal=True, positions='arange')
    vis = {**INTERNVIT_300M, **(cfg.get('_vision_config') or cfg.get('_vision_config_tiny')
                                or {})}
    patch = weights[VIT + 'embeddings.patch_embedding.weight']
    vision = VisionConfig(
        'internvit', image_size=int(cfg.get('image_size', 448)), patch_size=patch.shape[-1],
        hidden_size=patch.shape[0], num_layers=_layers(weights, VIT + 'encoder.layers.'),
        num_heads=vis['num_attention_heads'],
        intermediate_size=weights[VIT + 'encoder.layers.0.mlp.fc1.weight'].shape[0],
        downsample_ratio=float(vis['downsample_ratio']), qkv_bias=True)
    embed = int(cfg.get('embed_dim', 896))
    if embed != lm.hidden_size:
        raise ConvertError(f'embed_dim {embed} differs from the LM width {lm.hidden_size}; '
                           'Evo-1 feeds the LM states to the action head unprojected')
    head = HeadConfig(type='flow_dit', hidden_size=embed, num_layers=int(cfg['num_layers']),
                      num_heads=int(cfg['num_heads']), intermediate_size=4 * embed,
                      state_hidden=int(cfg.get('state_hidden_dim') or embed),
                      mlp_hidden=int(cfg.get('hidden_dim', 1024)), relu_mlps=True)
    horizon = int(cfg.get('action_horizon') or cfg['horizon'])
    exits = tuple(range(1, n_layers, 2)) + (() if n_layers % 2 == 0 else (n_layers - 1,))
    ids = {t: tok.token_to_id(t) for t in ('<IMG_CONTEXT>',)}
    pad = tok.token_to_id('<|endoftext|>')
    return VLAConfig(family='evo1', lm=lm, vision=vision, head=head, cameras=CAMERAS,
                     state_dim=int(cfg['state_dim']), action_dim=int(cfg['per_action_dim']),
                     chunk_len=horizon, text_len=text_len, exit_layers=exits,
                     pad_id=pad or 0, bos_id=pad or 0, eos_id=pad or 0,
                     image_token_id=ids['<IMG_CONTEXT>'], prompt_blocks=blocks)


def prompt_blocks(tok, n_views: int) -> tuple[tuple[int, ...], ...]:
    """`Image-{i}: <img>` + image tokens + `</img>\\n` per view (_build_multimodal_prompt),
    as the tokenizer splits it: special tokens cut the text into independent pieces."""
    def enc(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False).ids

    start, end = tok.token_to_id('<img>'), tok.token_to_id('</img>')
    if None in (start, end, tok.token_to_id('<IMG_CONTEXT>')):
        raise ConvertError('tokenizer.json lacks <img>, </img> or <IMG_CONTEXT>')
    blocks = [tuple(enc('Image-1: ') + [start])]
    for i in range(2, n_views + 1):
        blocks.append(tuple([end] + enc(f'\nImage-{i}: ') + [start]))
    blocks.append((end,))  # the '\n' after the last </img> starts the text template
    return tuple(blocks)


def map_weights(km: KeyMap, n_layers_lm: int, vit_layers: int) -> None:
    km.take_prefix(LM, 'decoder.')
    km.take_prefix(MLP1 + '0.', 'vision.multi_modal_projector.layer_norm.')
    km.take_prefix(MLP1 + '1.', 'vision.multi_modal_projector.linear_1.')
    km.take_prefix(MLP1 + '3.', 'vision.multi_modal_projector.linear_2.')
    ours = 'vision.vision_tower.'
    km.take(VIT + 'embeddings.class_embedding', ours + 'embeddings.cls_token')
    km.take_prefix(VIT + 'embeddings.patch_embedding.',
                   ours + 'embeddings.patch_embeddings.projection.')
    km.take(VIT + 'embeddings.position_embedding', ours + 'embeddings.position_embeddings')
    for n in range(vit_layers):
        up, me = f'{VIT}encoder.layers.{n}.', f'{ours}encoder.layer.{n}.'
        for kind in ('weight', 'bias'):
            q, k, v = km.get(f'{up}attn.qkv.{kind}').chunk(3, dim=0)
            for name, t in (('q', q), ('k', k), ('v', v)):
                km.put(f'{me}attention.{name}_proj.{kind}', t)
        km.take_prefix(up + 'attn.proj.', me + 'attention.projection_layer.')
        km.take(up + 'ls1', me + 'lambda_1')
        km.take(up + 'ls2', me + 'lambda_2')
        km.take_prefix(up + 'norm1.', me + 'layernorm_before.')
        km.take_prefix(up + 'norm2.', me + 'layernorm_after.')
        km.take_prefix(up + 'mlp.', me + 'mlp.')
    km.take('action_head.time_pos_enc.pe', 'head.time_pos_enc.pe', lambda t: t.reshape(
        t.shape[-2], t.shape[-1]))
    km.get('action_head.action_encoder.pos_encoding.pe')  # our table is computed, not stored
    km.take_prefix('action_head.', 'head.')


def convert(src: Path, out: Path, progress: bool = True) -> None:
    from tokenizers import Tokenizer

    from vla_ros.export.checkpoint import save_checkpoint
    from vla_ros.export.exporter import ExportSpec
    from vla_ros.model.vla import VLA
    from vla_ros.runtime.package.manifest import Normalization

    cfg = json.loads((src / 'config.json').read_text())
    if not (src / 'tokenizer.json').is_file():
        raise ConvertError(f'{src}: tokenizer.json is missing; copy InternVL3-1B\'s '
                           'tokenizer.json (with <img>, </img>, <IMG_CONTEXT>) beside it')
    tok = Tokenizer.from_file(str(src / 'tokenizer.json'))
    weights = _weights(src, progress)
    if not any(k.startswith(VIT) for k in weights):
        raise ConvertError(f'{src}: no {VIT}* tensors; the vision tower is part of a released '
                           'Evo-1 checkpoint (train.py saves the whole EVO1 module)')
    blocks = prompt_blocks(tok, len(CAMERAS))
    patch = weights[VIT + 'embeddings.patch_embedding.weight'].shape[-1]
    grid = int(cfg.get('image_size', 448)) // patch
    ratio = float((cfg.get('_vision_config') or cfg.get('_vision_config_tiny') or {}).get(
        'downsample_ratio', INTERNVIT_300M['downsample_ratio']))
    fixed = sum(len(b) for b in blocks) + len(CAMERAS) * int(grid * ratio) ** 2
    max_len = int(cfg.get('max_text_length', MAX_TEXT_LENGTH))
    vcfg = build_config(cfg, weights, tok, max_len - fixed, blocks)
    model = VLA(vcfg).eval()
    km = KeyMap(weights)
    map_weights(km, vcfg.lm.num_layers, vcfg.vision.num_layers)
    state = km.finish(model.state_dict())
    model.load_state_dict(state, strict=False)
    kind, s_stats, a_stats, stats_key = _stats(src, cfg.get('normalization_type', 'bounds'))
    n_state, n_action = len(next(iter(s_stats.values()))), len(next(iter(a_stats.values())))
    spec = ExportSpec(
        name=f'evo1-{src.name}', state_names=tuple(f'state_{i}' for i in range(n_state)),
        action_names=tuple(f'action_{i}' for i in range(n_action)), dt_s=0.05,
        state_norm=Normalization(kind, {k: tuple(v) for k, v in s_stats.items()}, clip=True),
        action_norm=Normalization(kind, {k: tuple(v) for k, v in a_stats.items()}),
        template='\n{instruction}', flow_steps=50,
        camera={'resize': 'bilinear', 'channel_order': 'bgr', 'missing': 'black'},
        optional_cameras=CAMERAS,
        action_mask=True,
        provenance={'converted_from': 'evo1', 'source': str(src), 'norm_stats': stats_key,
                    'actions': 'as the Evo-1 server returns them (relative for delta-trained '
                               'embodiments; the client integrates)'})
    if progress:
        print(f'convert: evo1, {vcfg.lm.num_layers} LM layers, {len(state)} tensors')
    save_checkpoint(out, model, spec, tok)
