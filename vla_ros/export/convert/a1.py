"""A1 (ATeam-Research/A1) checkpoints -> our checkpoint directory.

Published layout (`a1/checkpoint.py`): `config.yaml` (TrainConfig; its `model:` section is the
ModelConfig) or `model.yaml` (the ModelConfig itself), the weights as `model.pt` (a plain
state dict) or safetensors, `tokenizer.json` (Qwen2's with A1's extra tokens) and, for
de-normalization, `dataset_statistics.json` ({key: {"action"|"actions", "proprio": {q01, q99,
mask, ...}}}). Keys: `transformer.{wte.embedding,wte.new_embedding,blocks.N.*,ln_f}`,
`action_head.{qwen2.model.*,state_proj,action_in_proj,action_time_in,action_time_out,
action_out}`, `proprio_projector.*`, `vision_backbone.*`.

The converted model is A1's flow-matching model (reference/fidelity.md §1 A1): a causal LLM,
the expert with RoPE base 1e4, causal attention inside its suffix and the diffusion-policy time
embedding, the proprio token filled by `proprio_projector`, BOS = <|endoftext|>, and exits at
A1's layer-0 anchor plus every `exit_interval`-th layer (A1's get_all_exit_idx, interval 2).
With a `vision_backbone` (a1_vision.py): the CLIP ViT, `vit_layers` concatenated, `pad_embed`
by each patch's padding fraction, mean-query 2x2 attention pooling and the SwiGLU projector at
the published shapes; per camera, right after BOS, `<im_start>` + rows of `<im_patch>` closed
by `<im_col>` + `<im_end>`, the features added to the `<im_patch>` embeddings; each camera
resized and padded as upstream's resize_and_pad (the `resize_pad` step, whose per-patch image
fraction feeds the vision graph). crop_mode "resize": one such block per camera;
"overlap-and-resize-c2" (the released LIBERO-exit checkpoint): two, the global image then
upstream's single crop (its tiling is fixed at 1 x 1: the same pixels, every patch marked part
padding), from one ViT pass. Refused with the reason: the crop modes A1 does not implement,
other ViTs, poolings, projectors and padding embeddings, and the l1_regression variant.
A `mask` in the statistics becomes lo = -1, hi = 1 on the unmasked entries (identity there),
until manifests carry masks.

Optional `vla_ros_convert.json` beside the checkpoint sets what the checkpoint files do not
say: {"template": str, "lowercase": bool, "text_len": int, "exit_interval": int,
"sequence_length": int (default: config.yaml's data.sequence_length, the padded prompt length
where the expert's suffix positions start),
"cameras": [names, in the order upstream received the images; default primary, wrist]}.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vla_ros.export.convert import ConvertError, a1_vision
from vla_ros.export.convert.keys import KeyMap, load_pt_state_dict, safetensors_in

DROPPED = ('transformer.ff_out.weight', 'action_head.qwen2.model.embed_tokens.weight',
           'action_head.qwen2.lm_head.weight')
DEFAULTS = {'template': 'User: {instruction} Assistant:', 'lowercase': True, 'text_len': 64,
            'exit_interval': 2, 'cameras': ('primary', 'wrist')}
EXPERT_ROPE_THETA = 1e4  # the expert's Qwen2Config keeps transformers' default


def _model_config(src: Path) -> dict | None:
    import yaml

    for name in ('config.yaml', 'model.yaml'):
        p = src / name
        if p.is_file():
            data = yaml.safe_load(p.read_text())
            if isinstance(data, dict) and isinstance(data.get('model'), dict):
                data = data['model']
            if isinstance(data, dict) and 'd_model' in data and 'action_head' in data:
                return data
    return None


def sequence_length(src: Path, opts: dict) -> int:
    """The prompt length A1 pads to before its LLM (`data.sequence_length` of config.yaml, or
    `sequence_length` in vla_ros_convert.json); 0 when neither says (a bare model.yaml)."""
    import yaml

    if opts.get('sequence_length') is not None:
        return int(opts['sequence_length'])
    p = src / 'config.yaml'
    if p.is_file():
        data = yaml.safe_load(p.read_text())
        if isinstance(data, dict) and isinstance(data.get('data'), dict):
            return int(data['data'].get('sequence_length') or 0)
    return 0


def detect(src: Path) -> bool:
    try:
        return _model_config(src) is not None
    except Exception:  # a YAML file of some other project
        return False


def _weights(src: Path, progress: bool) -> dict[str, torch.Tensor]:
    found = safetensors_in(src, progress)
    if found is not None:
        return found
    if (src / 'model.pt').is_file():
        return load_pt_state_dict(src / 'model.pt')
    raise ConvertError(f'{src}: no weights (model.pt or *.safetensors)')


def build_config(mc: dict, opts: dict, tok) -> object:
    from vla_ros.model.config import HeadConfig, LMConfig, VisionConfig, VLAConfig

    if mc['action_head'] != 'flow_matching':
        raise ConvertError(f"action_head {mc['action_head']!r}: only flow_matching converts")
    n = int(mc['n_layers'])
    if int(mc['action_head_flow_matching_layers']) != n:
        raise ConvertError('the expert must be as deep as the LLM (it reads every layer\'s KV)')
    if int(mc['action_head_flow_matching_kv_heads']) != int(mc['n_kv_heads']):
        raise ConvertError('the expert\'s KV heads must equal the LLM\'s')
    lm = LMConfig(hidden_size=int(mc['d_model']), num_layers=n, num_heads=int(mc['n_heads']),
                  num_kv_heads=int(mc['n_kv_heads']),
                  intermediate_size=int(mc['mlp_hidden_size']) // 2,
                  vocab_size=int(mc['embedding_size']) + int(mc['additional_vocab_size']),
                  rope_theta=float(mc['rope_theta']), rms_eps=float(mc['layer_norm_eps']),
                  causal=True, positions='mask')
    head = HeadConfig(type='flow_expert', hidden_size=int(mc['action_head_flow_matching_dim']),
                      num_heads=int(mc['action_head_flow_matching_heads']),
                      intermediate_size=int(mc['action_head_flow_matching_intermediate_size']),
                      rope_theta=EXPERT_ROPE_THETA, causal_suffix=True,
                      time_embedding='diffusion_policy', proprio_token=bool(mc['use_proprio']))
    interval = int(opts['exit_interval'])
    exits = sorted({0, *range(1, n, interval), n - 1})
    bos, proprio = tok.token_to_id('<|endoftext|>'), tok.token_to_id('<proprioception>')
    if bos is None or proprio is None:
        raise ConvertError('tokenizer.json lacks <|endoftext|> or <proprioception>')
    if mc.get('vision_backbone'):
        images = a1_vision.vision_config(mc, tok, tuple(opts['cameras']), bos)
    else:
        images = dict(vision=VisionConfig(kind='none'), cameras=(), prompt_blocks=((bos,),))
    return VLAConfig(family='a1', lm=lm, head=head, **images, state_dim=int(mc['proprio_dim']),
                     action_dim=int(mc['fixed_action_dim']),
                     chunk_len=int(mc['num_actions_chunk']), text_len=int(opts['text_len']),
                     exit_layers=tuple(exits), pad_id=bos, bos_id=bos, eos_id=bos,
                     proprio_token_id=proprio)


def map_weights(km: KeyMap, cfg) -> None:
    lm = cfg.lm
    km.put('decoder.embed_tokens.weight', torch.cat([km.get('transformer.wte.embedding'),
                                                     km.get('transformer.wte.new_embedding')]))
    kv = lm.num_kv_heads * lm.head_dim
    for i in range(lm.num_layers):
        up, me = f'transformer.blocks.{i}.', f'decoder.layers.{i}.'
        for kind in ('weight', 'bias'):
            q, k, v = km.get(f'{up}att_proj.{kind}').split([lm.hidden_size, kv, kv])
            for name, t in (('q', q), ('k', k), ('v', v)):
                km.put(f'{me}self_attn.{name}_proj.{kind}', t)
        km.take(up + 'attn_out.weight', me + 'self_attn.o_proj.weight')
        # Molmo's SwiGLU: x, gate = ff_proj(x).chunk(2); silu(gate) * x
        x, gate = km.get(up + 'ff_proj.weight').chunk(2, dim=0)
        km.put(me + 'mlp.up_proj.weight', x)
        km.put(me + 'mlp.gate_proj.weight', gate)
        km.take(up + 'ff_out.weight', me + 'mlp.down_proj.weight')
        km.take(up + 'attn_norm.weight', me + 'input_layernorm.weight')
        km.take(up + 'ff_norm.weight', me + 'post_attention_layernorm.weight')
    km.take('transformer.ln_f.weight', 'decoder.norm.weight')
    for k in DROPPED:
        if k in km.upstream:
            km.get(k)
    km.take_prefix('action_head.', 'head.')
    km.take_prefix('proprio_projector.', 'head.proprio_projector.')
    if cfg.cameras:
        a1_vision.map_vision(km, cfg)


def _norm(entry: dict | None, n: int):
    from vla_ros.runtime.package.manifest import Normalization

    if entry is None:
        return Normalization()
    lo, hi = list(entry['q01'][:n]), list(entry['q99'][:n])
    for i, m in enumerate(entry.get('mask', [True] * n)[:n]):
        if not m:  # left raw upstream: bounds of -1, 1 are the identity
            lo[i], hi[i] = -1.0, 1.0
    return Normalization('bounds_q99', {'q01': tuple(lo), 'q99': tuple(hi)})


def convert(src: Path, out: Path, progress: bool = True) -> None:
    from tokenizers import Tokenizer

    from vla_ros.export.checkpoint import save_checkpoint
    from vla_ros.export.exporter import ExportSpec
    from vla_ros.model.vla import VLA

    mc = _model_config(src)
    if mc is None:
        raise ConvertError(f'{src}: no A1 config.yaml / model.yaml')
    opts = dict(DEFAULTS)
    if (src / 'vla_ros_convert.json').is_file():
        opts.update(json.loads((src / 'vla_ros_convert.json').read_text()))
    if not (src / 'tokenizer.json').is_file():
        raise ConvertError(f'{src}: tokenizer.json is missing (Qwen2 tokenizer with A1\'s '
                           'extra tokens)')
    tok = Tokenizer.from_file(str(src / 'tokenizer.json'))
    cfg = build_config(mc, opts, tok)
    padded = sequence_length(src, opts)
    if padded:
        # A1's deploy and eval pad the prompt to this length (pad='to_max'), masked out, so
        # the expert's suffix positions start there.
        from dataclasses import replace

        from vla_ros.model.vla import build_layout

        length = build_layout(cfg).length
        if length > padded:
            raise ConvertError(f'the prompt layout is {length} tokens, longer than the '
                               f'sequence_length {padded} A1 pads to: lower text_len in '
                               'vla_ros_convert.json')
        cfg = replace(cfg, head=replace(cfg.head, suffix_position_start=padded))
    model = VLA(cfg).eval()
    km = KeyMap(_weights(src, progress), dropped=DROPPED)
    map_weights(km, cfg)
    model.load_state_dict(km.finish(model.state_dict()), strict=False)
    stats = None
    if (src / 'dataset_statistics.json').is_file():
        stats = next(iter(json.loads((src / 'dataset_statistics.json').read_text()).values()))
    n_act, n_state = int(mc['action_dim']), int(mc['proprio_dim'])
    spec = ExportSpec(
        name=f'a1-{src.name}', state_names=tuple(f'proprio_{i}' for i in range(n_state)),
        action_names=tuple(f'action_{i}' for i in range(n_act)), dt_s=0.05,
        state_norm=_norm(stats and stats.get('proprio'), n_state),
        action_norm=_norm(stats and (stats.get('action') or stats.get('actions')), n_act),
        template=opts['template'], lowercase=bool(opts['lowercase']),
        camera=a1_vision.camera_spec(cfg, mc) if cfg.cameras else {},
        flow_steps=int(mc['num_diffusion_inference_steps']), truncated_steps=2,
        provenance={'converted_from': 'a1', 'source': str(src)})
    if progress:
        print(f'convert: a1, {cfg.lm.num_layers} LLM layers, exits {cfg.exits}')
    save_checkpoint(out, model, spec, tok)
