"""EdgeVLA (kscalelabs/evla) from its published layout:

  checkpoints/*.pt          torch.save({"model": {"vision_backbone", "projector",
                            "llm_backbone"}}), each module's keys without its prefix
                            (latest-checkpoint.pt preferred, else the one .pt there)
  config.json               the run config ({"model": ..., "vla": ...}); an `llm_config`
                            (Qwen2Config dict) in it, if present, gives the LLM's head count
  dataset_statistics.json   {unnorm_key: {action: {q01, q99, mask, ...}}}
  tokenizer.json            the Qwen2 tokenizer (upstream adds <|pad|> itself; so do we)

Upstream conventions kept (fidelity.md §1, §3): no BOS, the patches go after the first prompt
token; `In: What action should the robot take to {instruction}?\\nOut: ` with the instruction
lower-cased; the last 8 key columns (7 action tokens + EOS) hidden from every query; action j
read at the position before action token j (the causal-LM shift, feature_shift 1); OpenVLA's
255 bin centres (token = vocab_size - digitize, decode clipped to 254), bin_head row k = LM
head row vocab_size - 1 - k; letterbox with each backbone's mean colour, PIL bicubic; q99
un-normalization with the mask and no epsilon.
Action-position input: upstream teacher-forces the ground-truth action tokens there and has
no single-pass inference; we feed, at every action position, the action token of the bin that
holds 0.0 (`VLAConfig.action_token_id`, recorded in the manifest's prompt layout and
`head.config.action_input_id`; change it there to feed another token).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from vla_ros.export.convert import ConvertError
from vla_ros.export.convert import prismatic as pm
from vla_ros.export.convert.keys import KeyMap, Tensors, find_one

TEMPLATE = 'In: What action should the robot take to {instruction}?\nOut: '
N_BINS = 256
EXAMPLE = 'put the eggplant in the yellow basket'
QWEN2_05B = {'num_attention_heads': 14, 'rope_theta': 1e6, 'rms_norm_eps': 1e-6}
BRIDGE_NAMES = ('dx', 'dy', 'dz', 'droll', 'dpitch', 'dyaw', 'gripper')
DROPPED = ('llm_backbone.llm.lm_head.weight',)  # its bin rows become head.bin_head


def _checkpoint(src: Path) -> Path:
    d = src / 'checkpoints'
    latest = d / 'latest-checkpoint.pt'
    return latest if latest.is_file() else find_one(d, ('*.pt',), 'training checkpoint')


def detect(src: Path) -> bool:
    cfg = src / 'config.json'
    if not cfg.is_file() or not list((src / 'checkpoints').glob('*.pt')):
        return False
    try:
        data = json.loads(cfg.read_text())
    except json.JSONDecodeError:
        return False
    return isinstance(data.get('vla'), dict) and 'evla' in str(data['vla'].get('type', ''))


def _load(path: Path) -> dict:
    import torch

    try:
        obj = torch.load(str(path), map_location='cpu', weights_only=True)
    except Exception as e:  # torch raises UnpicklingError / RuntimeError variants
        raise ConvertError(f'{path}: not a weights-only checkpoint ({e})') from e
    model = obj.get('model') if isinstance(obj, dict) else None
    if not isinstance(model, dict):
        raise ConvertError(f'{path}: expected {{"model": {{module: state dict}}}}')
    out = {}
    for module, sd in model.items():
        if not isinstance(sd, dict):
            raise ConvertError(f'{path}: ["model"][{module!r}] is not a state dict')
        for k, v in sd.items():
            if not isinstance(v, torch.Tensor):
                raise ConvertError(f'{path}: ["model"][{module!r}][{k!r}] is '
                                   f'{type(v).__name__}, not a tensor')
            out[f'{module}.{k}'] = v
    if not any(k.startswith('vision_backbone.') for k in out):
        raise ConvertError(f'{path}: the checkpoint has no vision_backbone weights (saved '
                           'with only the trainable modules); re-save it with '
                           'save_full_model=True')
    return out


def convert(src: Path, out: Path, progress: bool = True) -> None:
    import torch
    from tokenizers import AddedToken, Tokenizer

    from vla_ros.export.checkpoint import save_checkpoint
    from vla_ros.export.exporter import ExportSpec
    from vla_ros.model.config import HeadConfig, LMConfig, VLAConfig
    from vla_ros.model.vla import VLA
    from vla_ros.runtime.package.manifest import Normalization

    config = json.loads((src / 'config.json').read_text())
    tok_path = src / 'tokenizer.json'
    if not tok_path.is_file():
        raise ConvertError(f'{tok_path} is missing: add the tokenizer.json of the base LLM '
                           '(Qwen/Qwen2-0.5B)')
    tokenizer = Tokenizer.from_file(str(tok_path))
    base_vocab = tokenizer.get_vocab_size(with_added_tokens=False)
    if tokenizer.token_to_id('<|pad|>') is None:
        tokenizer.add_special_tokens([AddedToken('<|pad|>', special=True, normalized=False)])
    pad_id = tokenizer.token_to_id('<|pad|>')
    eos_id = tokenizer.token_to_id('<|endoftext|>')
    unnorm_key, stats = pm.read_stats(src / 'dataset_statistics.json')
    w = Tensors(_load(_checkpoint(src)))

    llm = {**QWEN2_05B, **config.get('llm_config', {})}
    pre = 'llm_backbone.llm.model.'
    emb = w[pre + 'embed_tokens.weight']
    n_layers = 1 + max(int(m.group(1)) for k in w if (m := re.match(re.escape(pre)
                                                                    + r'layers\.(\d+)\.', k)))
    heads = int(llm['num_attention_heads'])
    hidden = emb.shape[1]
    lm = LMConfig(hidden_size=hidden, num_layers=n_layers, num_heads=heads,
                  num_kv_heads=w[pre + 'layers.0.self_attn.k_proj.weight'].shape[0]
                  // (hidden // heads),
                  intermediate_size=w[pre + 'layers.0.mlp.up_proj.weight'].shape[0],
                  vocab_size=emb.shape[0], rope_theta=float(llm['rope_theta']),
                  rms_eps=float(llm['rms_norm_eps']))
    size = int(config.get('default_image_size', 224))
    dino, siglip = 'vision_backbone.dino_featurizer.', 'vision_backbone.siglip_featurizer.'
    vision = pm.vision_config(w, dino, siglip, size, pm.timm_heads(config))
    action_dim = len(stats['action']['q01'])
    first_id, rest = pm.split_prompt(tokenizer, TEMPLATE, EXAMPLE)
    fixed = len(tokenizer.encode(rest.format(instruction=''), add_special_tokens=False).ids)
    # digitize(0.0) on linspace(-1, 1, 256) = 128: token vocab_size - 128.
    zero_token = base_vocab - int(np.digitize(0.0, np.linspace(-1, 1, N_BINS)))
    cfg = VLAConfig(
        family='edgevla', lm=lm, vision=vision,
        head=HeadConfig(type='nar_tokens', num_bins=N_BINS, bin_scheme='openvla',
                        feature_shift=1),
        cameras=('scene',), state_dim=action_dim, action_dim=action_dim, chunk_len=1,
        text_len=-(-(fixed + 48) // 8) * 8, text_padding='left',
        exit_layers=pm.quarter_exits(n_layers), pad_id=pad_id, bos_id=first_id,
        eos_id=eos_id, image_token_id=pad_id, action_token_id=zero_token)

    km = KeyMap(w, dropped=DROPPED)
    pm.map_vision(km, vision, dino, siglip)
    km.take('projector.projector.0.weight', 'vision.projector.fc1.weight')
    km.take('projector.projector.0.bias', 'vision.projector.fc1.bias')
    km.take('projector.projector.2.weight', 'vision.projector.fc2.weight')
    km.take('projector.projector.2.bias', 'vision.projector.fc2.bias')
    km.take_prefix(pre, 'decoder.')
    head = w.get('llm_backbone.llm.lm_head.weight', emb)  # tied in Qwen2-0.5B
    rows = torch.arange(base_vocab - 1, base_vocab - 1 - N_BINS, -1)
    km.put('head.bin_head.weight', head[rows])
    model = VLA(cfg)
    state = km.finish(model.state_dict(), ignore_missing=pm.IGNORE_MISSING)
    model.load_state_dict(state, strict=False)

    dino_mean, siglip_mean = (0.485, 0.456, 0.406), (0.5, 0.5, 0.5)
    camera = {'resize': 'pil_bicubic', 'letterbox': True, 'norms': [
        {'mean': dino_mean, 'std': (0.229, 0.224, 0.225),
         'fill': [int(x * 255) for x in dino_mean]},
        {'mean': siglip_mean, 'std': (0.5, 0.5, 0.5),
         'fill': [int(x * 255) for x in siglip_mean]}]}
    names = BRIDGE_NAMES if action_dim == 7 else tuple(f'action{i}' for i in range(action_dim))
    spec = ExportSpec(
        name=f'edgevla-{unnorm_key}', state_names=names, action_names=names, dt_s=0.2,
        state_norm=Normalization(), action_norm=pm.q99_norm(stats['action'], clip=False,
                                                            eps=0.0),
        template=rest, lowercase=True, camera=camera,
        embodiment={'dataset': unnorm_key, 'state': 'unused (EdgeVLA takes no proprio)'},
        provenance={'converted_from': 'EdgeVLA', 'source': str(src), 'unnorm_key': unnorm_key,
                    'action_input': f'token {zero_token} (the bin of 0.0) at every action '
                                    'position; upstream teacher-forces ground truth there'})
    save_checkpoint(out, model, spec, tokenizer)
