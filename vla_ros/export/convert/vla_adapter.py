"""VLA-Adapter (OpenHelix-Team/VLA-Adapter, Pro and original) from its published layout:

  model.safetensors (or a shard index)   OpenVLAForActionPrediction: vision_backbone.*,
                                          projector.fc1-3, language_model.*, action_queries
  config.json                             OpenVLAConfig (text_config, image_sizes, timm ids)
  dataset_statistics.json                 {unnorm_key: {action, proprio}} (BOUNDS_Q99, mask)
  preprocessor_config.json                PrismaticImageProcessor (mean/std per backbone)
  tokenizer.json                          the Qwen2.5 tokenizer (with its added tokens)
  action_head--*checkpoint.pt             L1RegressionActionHead state dict (DDP `module.`)
  proprio_projector--*checkpoint.pt       ProprioProjector state dict

Upstream conventions kept (fidelity.md §1, §3): the features are taken with upstream's index
math (feature_shift 1), the last block reads the final-normed state, the query features and
the proprio input are rounded to bf16 as upstream casts them, SigLIP uses the exact GELU, the
layout is [first prompt token][patches][rest of the prompt][64 queries][stop = 2], the
instruction is lower-cased into the chat template, the LIBERO eval image path (JPEG round trip,
lanczos3 224, centre crop 0.9) and PIL bicubic, q99 bounds with the gripper left raw, and the
LIBERO gripper post-processing (rescale, binarize, invert). Upstream sets H from the dataset
name (prismatic/vla/constants.py); so does this converter. Two views (third-person, wrist).
"""

from __future__ import annotations

import json
from pathlib import Path

from vla_ros.export.convert import ConvertError
from vla_ros.export.convert import prismatic as pm
from vla_ros.export.convert.keys import (
    KeyMap,
    Tensors,
    find_one,
    load_pt_state_dict,
    load_safetensors,
)

QWEN_TEMPLATE = ('<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful '
                 'assistant.<|im_end|>\n<|im_start|>user\nWhat action should the robot take to '
                 '{instruction}?<|im_end|>\n<|im_start|>assistant\n')
LLAMA_TEMPLATE = 'In: What action should the robot take to {instruction}?\nOut:'
STOP_INDEX = 2  # prismatic/vla/constants.py
POLICY_HEADS = 8  # MLPResNetBlock(_Pro) attention heads (action_heads.py)
# (H, dt_s, action names, state names) by the dataset name, as constants.py picks them.
PLATFORMS = {
    'libero': (8, 0.05, ('dx', 'dy', 'dz', 'droll', 'dpitch', 'dyaw', 'gripper'),
               ('eef_x', 'eef_y', 'eef_z', 'eef_ax', 'eef_ay', 'eef_az', 'gripper_q0',
                'gripper_q1')),
    'calvin': (8, 0.05, None, None),
    'aloha': (25, 0.04, None, None),
    'bridge': (5, 0.2, None, None),
}
DROPPED = ('language_model.lm_head.weight',  # tied to embed_tokens
           'head.action_head.model.mlp_resnet_blocks.*.film_gen.*')  # unused by the forward
EXAMPLE = 'pick up the black bowl and place it on the plate'


def detect(src: Path) -> bool:
    cfg = src / 'config.json'
    if not cfg.is_file() or not list(src.glob('action_head--*checkpoint.pt')):
        return False
    try:
        return json.loads(cfg.read_text()).get('model_type') == 'openvla'
    except json.JSONDecodeError:
        return False


def _weights(src: Path, progress: bool) -> dict:
    index = sorted(src.glob('model.safetensors.index.json'))
    path = index[0] if index else find_one(src, ('model.safetensors',), 'model weights file')
    w = load_safetensors(path, progress)
    head = find_one(src, ('action_head--*checkpoint.pt',), 'action head checkpoint')
    w.update(load_pt_state_dict(head, prefix='head.action_head.'))
    proprio = sorted(src.glob('proprio_projector--*checkpoint.pt'))
    if proprio:
        w.update(load_pt_state_dict(proprio[0], prefix='head.proprio_projector.'))
    return w


def _names(n: int, given, stem: str) -> tuple[str, ...]:
    return tuple(given) if given and len(given) == n else tuple(f'{stem}{i}' for i in range(n))


def convert(src: Path, out: Path, progress: bool = True) -> None:
    from tokenizers import Tokenizer

    from vla_ros.export.checkpoint import save_checkpoint
    from vla_ros.export.exporter import ExportSpec
    from vla_ros.model.config import HeadConfig, LMConfig, VLAConfig
    from vla_ros.model.vla import VLA

    config = json.loads((src / 'config.json').read_text())
    pre_path = src / 'preprocessor_config.json'
    pre = json.loads(pre_path.read_text()) if pre_path.is_file() else {}
    tok_path = src / 'tokenizer.json'
    if not tok_path.is_file():
        raise ConvertError(f'{tok_path} is missing (the checkpoint\'s tokenizer)')
    tokenizer = Tokenizer.from_file(str(tok_path))
    unnorm_key, stats = pm.read_stats(src / 'dataset_statistics.json')
    w = Tensors(_weights(src, progress))
    if 'head.proprio_projector.fc1.weight' not in w:
        raise ConvertError(f'{src}: no proprio_projector--*checkpoint.pt; this converter '
                           'serves VLA-Adapter with proprio (its published checkpoints)')

    tc = config['text_config']
    lm = LMConfig(hidden_size=tc['hidden_size'], num_layers=tc['num_hidden_layers'],
                  num_heads=tc['num_attention_heads'], num_kv_heads=tc['num_key_value_heads'],
                  intermediate_size=tc['intermediate_size'], vocab_size=tc['vocab_size'],
                  rope_theta=float(tc.get('rope_theta', 1e6)), rms_eps=tc['rms_norm_eps'])
    size = int((config.get('image_sizes') or [224])[0])
    dino, siglip = 'vision_backbone.featurizer.', 'vision_backbone.fused_featurizer.'
    vision = pm.vision_config(w, dino, siglip, size, pm.timm_heads(config))
    platform = next((p for p in PLATFORMS if p in unnorm_key.lower()), 'libero')
    chunk_len, dt_s, action_names, state_names = PLATFORMS[platform]
    action_dim = w['head.action_head.model.fc2.weight'].shape[0]
    state_dim = w['head.proprio_projector.fc1.weight'].shape[1]
    queries = w['action_queries.weight'].shape[0]
    pro = any('.k_self.' in k for k in w)
    template = QWEN_TEMPLATE if 'qwen' in config.get('hf_llm_id', '').lower() else LLAMA_TEMPLATE
    first_id, rest = pm.split_prompt(tokenizer, template, EXAMPLE)
    fixed = len(tokenizer.encode(rest.format(instruction=''), add_special_tokens=False).ids)
    cfg = VLAConfig(
        family='vla_adapter', lm=lm, vision=vision,
        head=HeadConfig(type='bridge', hidden_size=lm.hidden_size, num_heads=POLICY_HEADS,
                        num_action_queries=queries, pro=pro, feature_shift=1,
                        norm_last_features=True, bf16_features=True),
        cameras=('scene', 'wrist'), state_dim=state_dim, action_dim=action_dim,
        chunk_len=chunk_len, text_len=-(-(fixed + 96) // 8) * 8, text_padding='left',
        exit_layers=pm.quarter_exits(lm.num_layers),
        pad_id=int(config.get('pad_token_id') or 0), bos_id=first_id, eos_id=STOP_INDEX,
        image_token_id=int(config.get('pad_token_id') or 0), query_token_id=1)

    km = KeyMap(w, dropped=DROPPED)
    pm.map_vision(km, vision, dino, siglip)
    km.take_prefix('projector.', 'vision.projector.')
    km.take_prefix('language_model.model.', 'decoder.')
    km.take('action_queries.weight', 'action_queries.weight')
    km.take_prefix('head.', 'head.')
    model = VLA(cfg)
    state = km.finish(model.state_dict(), ignore_missing=pm.IGNORE_MISSING)
    model.load_state_dict(state, strict=False)

    means = pre.get('means') or [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]]
    stds = pre.get('stds') or [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]]
    for i, p in enumerate(pre.get('tvf_normalize_params') or []):
        means[i], stds[i] = p['mean'], p['std']  # the float32 values the transform applies
    camera = {
        'steps': [{'op': 'jpeg', 'quality': 95},
                  {'op': 'resize', 'height': 224, 'width': 224, 'method': 'tf_lanczos3'},
                  {'op': 'center_crop', 'area': 0.9, 'method': 'tf_bilinear'}],
        'resize': 'pil_bicubic', 'letterbox': bool(pre.get('tvf_do_letterbox', False)),
        'norms': [{'mean': m, 'std': s} for m, s in zip(means, stds, strict=True)]}
    spec = ExportSpec(
        name=f'vla_adapter-{unnorm_key}', state_names=_names(state_dim, state_names, 'state'),
        action_names=_names(action_dim, action_names, 'action'), dt_s=dt_s,
        state_norm=pm.q99_norm(stats['proprio'], clip=True, eps=1e-8),
        action_norm=pm.q99_norm(stats['action'], clip=False, eps=1e-8),
        template=rest, lowercase=True, camera=camera,
        gripper={'index': action_dim - 1, 'rescale': True, 'binarize': True, 'invert': True},
        embodiment={'dataset': unnorm_key, 'platform': platform},
        provenance={'converted_from': 'VLA-Adapter', 'source': str(src),
                    'unnorm_key': unnorm_key})
    save_checkpoint(out, model, spec, tokenizer)
