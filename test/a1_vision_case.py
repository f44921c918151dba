"""The A1 vision case shared by the converter tests: a tiny checkpoint built in the upstream A1
layout (the shared parity case's LLM and expert plus a seeded-random `vision_backbone`), and an
independent re-statement of upstream's forward in plain torch (a1/image_vit.py, a1/model.py
MolmoVisionBackbone and Molmo.forward, a1/data/model_preprocessor.py resize_and_pad)."""

import json
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file

from vla_ros.export.exporter import OPENAI_CLIP

CASE = Path(__file__).parent / 'data' / 'parity' / 'a1'
VB = 'vision_backbone.'
SIZE, PATCH, WIDTH, HEADS, LAYERS = 28, 7, 16, 2, 3
VIT_LAYERS = [-2, 0]  # 0 is upstream's first block output (transformers' hidden_states[1])
OPTIONS = {'template': 'What action should the robot take to {instruction}?',
           'lowercase': True, 'text_len': 14, 'exit_interval': 1, 'cameras': ['front', 'wrist']}
VISION = {'image_model_type': 'openai', 'image_default_input_size': [SIZE, SIZE],
          'image_patch_size': PATCH, 'image_pos_patch_size': PATCH, 'image_emb_dim': WIDTH,
          'image_num_heads': HEADS, 'image_num_key_value_heads': HEADS,
          'image_num_layers': LAYERS, 'image_head_dim': WIDTH // HEADS, 'image_mlp_dim': 32,
          'image_mlp_activations': 'quick_gelu', 'image_dropout_rate': 0.0,
          'image_num_pos': (SIZE // PATCH) ** 2 + 1, 'image_norm_eps': 1e-5,
          'resize_mode': 'default'}


def vision_tensors(d_model: int, mlp_hidden: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Upstream names and shapes (MolmoVisionBackbone.state_dict()), seeded random values."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.2, base=0.0):
        return base + scale * torch.randn(*shape, generator=g)

    grid, cat = SIZE // PATCH, WIDTH * len(VIT_LAYERS)
    vit = VB + 'image_vit.'
    t = {vit + 'class_embedding': r(WIDTH), vit + 'positional_embedding': r(grid * grid + 1,
                                                                            WIDTH),
         vit + 'patch_embedding.weight': r(WIDTH, PATCH * PATCH * 3, scale=0.1),
         vit + 'pre_ln.weight': r(WIDTH, scale=0.1, base=1.0), vit + 'pre_ln.bias': r(WIDTH)}
    for n in range(LAYERS):
        b = f'{vit}transformer.resblocks.{n}.'
        for w in ('wq', 'wk', 'wv', 'wo'):
            t[f'{b}attention.{w}.weight'] = r(WIDTH, WIDTH)
            t[f'{b}attention.{w}.bias'] = r(WIDTH)
        t[b + 'feed_forward.w1.weight'], t[b + 'feed_forward.w1.bias'] = r(32, WIDTH), r(32)
        t[b + 'feed_forward.w2.weight'], t[b + 'feed_forward.w2.bias'] = r(WIDTH, 32), r(WIDTH)
        for ln in ('attention_norm', 'ffn_norm'):
            t[f'{b}{ln}.weight'], t[f'{b}{ln}.bias'] = r(WIDTH, scale=0.1, base=1.0), r(WIDTH)
    pool = VB + 'image_pooling_2d.'
    for w in ('wq', 'wk', 'wv'):
        t[f'{pool}{w}.weight'], t[f'{pool}{w}.bias'] = r(WIDTH, cat), r(WIDTH)
    t[pool + 'wo.weight'], t[pool + 'wo.bias'] = r(WIDTH, WIDTH), r(WIDTH)
    proj = VB + 'image_projector.'
    t[proj + 'w1.weight'] = r(mlp_hidden // 2, WIDTH, scale=0.1)
    t[proj + 'w3.weight'] = r(mlp_hidden // 2, WIDTH, scale=0.1)
    t[proj + 'w2.weight'] = r(d_model, mlp_hidden // 2, scale=0.1)
    t[VB + 'pad_embed'] = r(2, cat, scale=1.0)
    return t


def build_checkpoint(dst: Path, model_overrides: dict | None = None,
                     tensors: dict | None = None) -> Path:
    dst.mkdir(parents=True)
    mc = yaml.safe_load((CASE / 'model.yaml').read_text())
    mc.update(vision_backbone=dict(VISION), crop_mode='resize', max_crops=2,
              use_col_tokens=True, pad_value=0.0, vit_layers=list(VIT_LAYERS),
              image_padding_embed='pad_and_partial_pad', image_pooling_2d='attention_meanq',
              image_projector='mlp')
    mc.update(model_overrides or {})
    (dst / 'model.yaml').write_text(yaml.safe_dump(mc))
    shutil.copy(CASE / 'tokenizer.json', dst / 'tokenizer.json')
    weights = load_file(str(CASE / 'upstream.safetensors'))
    weights.update(tensors if tensors is not None else vision_tensors(
        int(mc['d_model']), int(mc['mlp_hidden_size'])))
    save_file(weights, str(dst / 'model.safetensors'))
    (dst / 'vla_ros_convert.json').write_text(json.dumps(OPTIONS))
    return dst


# --- upstream, restated -------------------------------------------------------------------

CLIP_MEAN = torch.tensor(OPENAI_CLIP.mean)
CLIP_STD = torch.tensor(OPENAI_CLIP.std)


def upstream_resize_and_pad(image: np.ndarray, height: int, width: int):
    """resize_and_pad('torch-bilinear', pad_value 0), then _normalize('openai'):
    (pixels (height, width, 3), image mask (height, width))."""
    h, w = image.shape[:2]
    scale = min(np.float32(height) / np.float32(h), np.float32(width) / np.float32(w))
    sh, sw = int(np.float32(h) * scale), int(np.float32(w) * scale)
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    x = F.interpolate(x[None], size=(sh, sw), mode='bilinear', align_corners=False,
                      antialias=True)[0].clip(0.0, 1.0).permute(1, 2, 0)
    top, left = (height - sh) // 2, (width - sw) // 2
    out, mask = torch.zeros(height, width, 3), torch.zeros(height, width)
    out[top:top + sh, left:left + sw] = x
    mask[top:top + sh, left:left + sw] = 1.0
    return (out - CLIP_MEAN) / CLIP_STD, mask  # padding is normalized too


def upstream_preprocess(image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """resize_and_pad + _normalize('openai') + pixels_to_patches -> (patches (P, ps*ps*3),
    image fraction per patch (P,))."""
    padded, mask = upstream_resize_and_pad(image, SIZE, SIZE)
    g = SIZE // PATCH
    patches = padded.reshape(g, PATCH, g, PATCH, 3).permute(0, 2, 1, 3, 4).reshape(g * g, -1)
    frac = mask.reshape(g, PATCH, g, PATCH).permute(0, 2, 1, 3).reshape(g * g, -1).mean(-1)
    return patches, frac


def _attention(q_in, kv_in, up, prefix, heads):
    def lin(x, name):
        return F.linear(x, up[f'{prefix}{name}.weight'], up[f'{prefix}{name}.bias'])

    q, k, v = lin(q_in, 'wq'), lin(kv_in, 'wk'), lin(kv_in, 'wv')
    n, tq = q.shape[0], q.shape[1]
    hd = q.shape[-1] // heads
    q, k, v = (t.reshape(n, -1, heads, hd) for t in (q, k, v))
    att = torch.einsum('nqhd,nkhd->nhqk', q / hd ** 0.5, k).softmax(-1)
    return lin(torch.einsum('nhqk,nkhd->nqhd', att, v).reshape(n, tq, heads * hd), 'wo')


def upstream_image_features(up: dict, patches: torch.Tensor, frac: torch.Tensor
                            ) -> torch.Tensor:
    """MolmoVisionBackbone.forward for (N crops, P, ps*ps*3) -> (N, tokens, d_model)."""
    vit = VB + 'image_vit.'
    x = patches @ up[vit + 'patch_embedding.weight'].T
    cls = up[vit + 'class_embedding'].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], 1) + up[vit + 'positional_embedding'][None]
    x = F.layer_norm(x, (WIDTH,), up[vit + 'pre_ln.weight'], up[vit + 'pre_ln.bias'], 1e-5)
    hidden = []
    for n in range(LAYERS):
        b = f'{vit}transformer.resblocks.{n}.'
        y = F.layer_norm(x, (WIDTH,), up[b + 'attention_norm.weight'],
                         up[b + 'attention_norm.bias'], 1e-5)
        x = x + _attention(y, y, up, b + 'attention.', HEADS)
        y = F.layer_norm(x, (WIDTH,), up[b + 'ffn_norm.weight'], up[b + 'ffn_norm.bias'], 1e-5)
        y = F.linear(y, up[b + 'feed_forward.w1.weight'], up[b + 'feed_forward.w1.bias'])
        y = y * torch.sigmoid(1.702 * y)  # quick_gelu
        x = x + F.linear(y, up[b + 'feed_forward.w2.weight'], up[b + 'feed_forward.w2.bias'])
        hidden.append(x)
    f = torch.cat([hidden[i] for i in VIT_LAYERS], -1)[:, 1:]
    all_pad = (frac == 0).float()[..., None]
    partial = ((frac < 1) & (frac != 0)).float()[..., None]
    f = f + up[VB + 'pad_embed'][0] * all_pad + up[VB + 'pad_embed'][1] * partial
    n, g, c = f.shape[0], SIZE // PATCH, f.shape[-1]
    # 'b n (h dh) (w dw) c -> (b n h w) (dh dw) c'
    windows = f.reshape(n, g // 2, 2, g // 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, 4, c)
    pooled = _attention(windows.mean(-2, keepdim=True), windows, up, VB + 'image_pooling_2d.',
                        HEADS).reshape(n, (g // 2) ** 2, -1)
    p = VB + 'image_projector.'
    return F.linear(F.silu(F.linear(pooled, up[p + 'w1.weight'])) *
                    F.linear(pooled, up[p + 'w3.weight']), up[p + 'w2.weight'])


def upstream_prompt(tok, instruction: str, n_images: int) -> tuple[list[int], list[int]]:
    """MultiModalPreprocessor.__call__ with no <|image|> in the text: the image blocks go first,
    BOS before everything; returns (ids, positions of the <im_patch> tokens in order)."""
    per_row = [tok.token_to_id('<im_patch>')] * ((SIZE // PATCH) // 2) + [
        tok.token_to_id('<im_col>')]
    block = [tok.token_to_id('<im_start>')] + per_row * ((SIZE // PATCH) // 2) + [
        tok.token_to_id('<im_end>')]
    text = tok.encode(OPTIONS['template'].format(instruction=instruction.lower()),
                      add_special_tokens=False).ids
    ids = [tok.token_to_id('<|endoftext|>')] + block * n_images + text
    return ids, [i for i, t in enumerate(ids) if t == tok.token_to_id('<im_patch>')]


def exported_vision(model, spec, tok, tmp_path, images):
    """The converted model exported to an ORT package, one observation of `images` prepared
    by its runtime policy, and the vision graph's tokens for it: (package, policy, inputs,
    tokens)."""
    from vla_ros.export.exporter import export_package
    from vla_ros.runtime.backends import load_backend
    from vla_ros.runtime.package.loader import load_package
    from vla_ros.runtime.policy.policy import Observation, Policy, PolicyConfig

    export_package(model, tmp_path / 'pkg', spec, tok, jobs=1, progress=lambda _: None)
    pkg = load_package(tmp_path / 'pkg')
    backend = load_backend(pkg)
    policy = Policy(pkg, backend, PolicyConfig(mode='full'))
    obs = Observation(images={c: (im, 'rgb8') for c, im in zip(model.cfg.cameras, images,
                                                               strict=True)},
                      state=np.zeros(pkg.manifest.state.dim), instruction='Open the drawer',
                      stamp_s=0.0)
    inputs = policy.prepare(obs)
    feeds = {f'image.{c}': a for c, a in inputs.images.items()}
    feeds.update({f'patch_mask.{c}': m for c, m in inputs.patch_masks.items()})
    tokens = backend.to_host(backend.run('vision', feeds)['vision_tokens'])
    return pkg, policy, inputs, tokens


def assert_package_action_matches_torch(policy, inputs, model) -> None:
    """The exported package's last-exit action (ORT, 3 flow steps, fixed noise) against the
    torch model's on the same prepared inputs."""
    noise = np.random.default_rng(1).standard_normal((model.cfg.chunk_len,
                                                      model.cfg.action_dim)).astype(np.float32)
    run = policy.pipeline.start(inputs)
    run.advance_to(len(run.p.exits) - 1)
    ours = run.action(noise, num_steps=3)
    t = {k: torch.from_numpy(np.asarray(v)) for k, v in (('ids', inputs.input_ids),
                                                         ('mask', inputs.attention_mask),
                                                         ('state', inputs.state))}
    want = model.actions_at_exits(
        [torch.from_numpy(inputs.images[c]) for c in model.cfg.cameras], t['ids'], t['mask'],
        t['state'], torch.from_numpy(noise)[None], num_steps=3,
        patch_masks=[torch.from_numpy(inputs.patch_masks[c]) for c in model.cfg.cameras])
    np.testing.assert_allclose(ours, want[model.cfg.exits[-1]][0].numpy(), atol=1e-4)
