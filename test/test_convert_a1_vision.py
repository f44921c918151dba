"""The A1 converter's Molmo vision path, on a tiny checkpoint built in the upstream A1 layout
(the shared parity case's LLM and expert plus a seeded-random `vision_backbone`), against an
independent re-statement of upstream's forward in plain torch (a1/image_vit.py, a1/model.py
MolmoVisionBackbone and Molmo.forward, a1/data/model_preprocessor.py resize_and_pad)."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file

from vla_ros.export.checkpoint import load_checkpoint
from vla_ros.export.convert import ConvertError, convert_checkpoint
from vla_ros.export.exporter import OPENAI_CLIP, camera_specs
from vla_ros.runtime.package.manifest import PromptSpec
from vla_ros.runtime.policy import image_ops
from vla_ros.runtime.policy.preprocess import ImagePreprocessor, PromptBuilder

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


# --- tests --------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp('a1v')
    src = build_checkpoint(root / 'published')
    convert_checkpoint(src, root / 'ckpt', 'a1', progress=False)
    model, spec, tok = load_checkpoint(root / 'ckpt')
    return src, model.eval(), spec, tok


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (10, 60, 3), dtype=np.uint8),  # wide: all-padding rows
            rng.integers(0, 256, (50, 31, 3), dtype=np.uint8)]  # portrait: left/right pads


def test_vision_tokens_match_upstream_molmo_connector(converted):
    src, model, spec, _ = converted
    up = load_file(str(src / 'model.safetensors'))
    cams = camera_specs(model.cfg, spec.camera)
    ours, ref, fracs = [], [], []
    for cam, image in zip(cams, _images(), strict=True):
        pre = ImagePreprocessor(cam)
        pixels = torch.from_numpy(pre(image, 'rgb8'))
        mask = torch.from_numpy(pre.patch_mask(*image.shape[:2]))
        patches, frac = upstream_preprocess(image)
        g = SIZE // PATCH  # our pixels, re-cut into upstream's patches
        cut = pixels[0].permute(1, 2, 0).reshape(g, PATCH, g, PATCH, 3).permute(0, 2, 1, 3, 4)
        assert torch.allclose(cut.reshape(g * g, -1), patches, atol=2e-6)
        assert torch.equal(mask[0], frac)
        fracs.append(frac)
        with torch.no_grad():
            ours.append(model.encode_images([pixels], [mask]))
        ref.append(upstream_image_features(up, patches[None], frac[None]))
    frac = torch.cat(fracs)
    assert (frac == 0).any() and ((frac > 0) & (frac < 1)).any()  # both pad_embed rows used
    torch.testing.assert_close(torch.cat(ours, 1), torch.cat(ref, 1), rtol=1e-5, atol=1e-5)


def test_image_features_are_added_to_the_im_patch_embeddings_of_molmo_image_blocks(converted):
    src, model, spec, tok = converted
    up = load_file(str(src / 'model.safetensors'))
    layout = model.layout.items
    prompt = PromptBuilder(PromptSpec(tokenizer_file=str(src / 'tokenizer.json'),
                                      template=spec.template, max_length=model.cfg.text_len,
                                      pad_id=model.cfg.pad_id, lowercase=spec.lowercase,
                                      layout=layout), str(src / 'tokenizer.json'))
    ids, mask = prompt('Put the bowl on the plate')
    ref_ids, patch_pos = upstream_prompt(tok, 'Put the bowl on the plate', 2)
    kept = np.flatnonzero(mask[0])[:-1]  # unpadded positions, less our proprio slot
    assert ids[0, kept].tolist() == ref_ids
    g = torch.Generator().manual_seed(5)
    vis = torch.randn(1, 2 * model.cfg.vision.tokens_per_image, model.cfg.lm.hidden_size,
                      generator=g)
    with torch.no_grad():
        h = model.embed(torch.from_numpy(ids), vis, torch.zeros(1, model.cfg.state_dim))
    table = torch.cat([up['transformer.wte.embedding'], up['transformer.wte.new_embedding']])
    ref = table[torch.tensor(ref_ids)]
    # MultiModalPreprocessor.__call__ offsets every image's image_input_idx by the position
    # of its <|image|> token, 0 where the prompt has none: both images index the first
    # image's block. Molmo.forward then does x[batch_idx, image_input_idx] += features, an
    # index_put whose repeated indices keep the last image's value (on the CPU).
    per = len(patch_pos) // 2
    idx = torch.tensor(patch_pos[:per] * 2)
    ref[idx] += vis[0]
    assert torch.allclose(h[0, kept], ref, atol=1e-6)
    first, second = patch_pos[:per], patch_pos[per:]
    assert torch.allclose(h[0, kept][first], table[torch.tensor(ref_ids)][first] + vis[0, per:],
                          atol=1e-6)  # the last camera's features, in the first's block
    assert torch.equal(h[0, kept][second], table[torch.tensor(ref_ids)][second])  # bare


def test_pooling_projector_and_pad_embed_keep_the_published_shapes(converted):
    src, model, _, _ = converted
    sd = model.state_dict()
    up = load_file(str(src / 'model.safetensors'))
    for name in ('image_pooling_2d.wq.weight', 'image_pooling_2d.wo.weight',
                 'image_projector.w1.weight', 'image_projector.w2.weight', 'pad_embed'):
        assert torch.equal(sd['vision.' + name], up[VB + name])
    assert sd['vision.image_pooling_2d.wq.weight'].shape == (WIDTH, 2 * WIDTH)
    assert model.cfg.vision.feature_layers == (-2, 1)


def test_a_mis_shaped_vision_tensor_is_an_error_naming_the_key_and_both_shapes(tmp_path):
    tensors = vision_tensors(64, 192)
    tensors[VB + 'image_pooling_2d.wq.weight'] = torch.zeros(2 * WIDTH, 2 * WIDTH)
    src = build_checkpoint(tmp_path / 'published', tensors=tensors)
    with pytest.raises(ConvertError, match=r"image_pooling_2d\.wq\.weight: upstream gives shape "
                       r"\(32, 32\), our model needs \(16, 32\) \(upstream 'vision_backbone"):
        convert_checkpoint(src, tmp_path / 'ckpt', 'a1', progress=False)
    assert not (tmp_path / 'ckpt').exists()


def test_crop_modes_upstream_does_not_implement_are_refused_with_the_reason(tmp_path):
    # ModelConfig's default, which A1's MultiModalPreprocessor raises NotImplementedError on
    src = build_checkpoint(tmp_path / 'published', {'crop_mode': 'patchify-v2-and-resize-c2',
                                                    'max_crops': 4})
    with pytest.raises(ConvertError, match=r"crop_mode = 'patchify-v2-and-resize-c2' "
                       r"\(max_crops 4\): only \('resize', 'overlap-and-resize-c2'\) convert"):
        convert_checkpoint(src, tmp_path / 'ckpt', 'a1', progress=False)


def test_resize_pad_step_on_a_non_square_image_matches_the_hand_worked_layout(converted):
    _, model, spec, _ = converted
    cam = camera_specs(model.cfg, spec.camera)[0]
    assert cam.steps == ({'op': 'resize_pad', 'size': 28, 'patch': 7, 'fill': 0.0,
                          'method': 'torch_bilinear'},)
    # 24 x 40 into 28: scale = min(28/24, 28/40) = 0.7 (float32); 24 x 0.7 = 16.8 -> 16 rows
    # (upstream truncates), 40 x 0.7 -> 28 columns. top = (28 - 16) // 2 = 6: rows 6..21
    # hold the image, so the patch rows (7 pixel rows each) get 1/7, 1, 1, 1/7 of image.
    image = np.full((24, 40, 3), 255, np.uint8)
    pre = ImagePreprocessor(cam)
    rows = np.array([1 / 7, 1, 1, 1 / 7])
    np.testing.assert_allclose(pre.patch_mask(24, 40)[0], np.repeat(rows, 4), rtol=1e-6)
    out = pre(image, 'rgb8')[0]
    mean, std = np.array(cam.norms[0].mean), np.array(cam.norms[0].std)
    white, black = (1.0 - mean) / std, -mean / std  # padding is 0 before normalization
    np.testing.assert_allclose(out[:, 6:22], np.broadcast_to(white[:, None, None],
                                                             (3, 16, 28)), atol=1e-5)
    for pad in (out[:, :6], out[:, 22:]):
        np.testing.assert_allclose(pad, np.broadcast_to(black[:, None, None], (3, 6, 28)),
                                   atol=1e-6)


def test_torch_bilinear_antialias_is_reproduced_without_torch():
    rng = np.random.default_rng(0)
    for h, w, oh, ow in ((480, 640, 252, 336), (50, 31, 28, 17), (24, 40, 16, 27)):
        x = rng.random((h, w, 3), dtype=np.float32)
        ref = F.interpolate(torch.from_numpy(x).permute(2, 0, 1)[None], size=(oh, ow),
                            mode='bilinear', align_corners=False, antialias=True)
        ours = image_ops.torch_bilinear_aa(x, oh, ow)
        np.testing.assert_allclose(ours, ref[0].permute(1, 2, 0).numpy(), atol=5e-7)


def test_models_without_molmo_options_keep_their_prompt_and_vision_inputs():
    from vla_ros.export.graphs import build_graphs
    from vla_ros.model.config import VLAConfig
    from vla_ros.model.vla import VLA

    cfg = VLAConfig.tiny('a1')
    model = VLA(cfg)
    assert all('cols' not in it for it in model.layout.items if it['kind'] == 'image')
    assert [d.inputs for d in build_graphs(model) if d.role == 'vision'] == [
        ['image.scene', 'image.wrist']]
    molmo = VLA(replace(cfg, vision=replace(cfg.vision, pad_embed=True), image_merge='add',
                        image_col_token_id=8))
    assert [d.inputs for d in build_graphs(molmo) if d.role == 'vision'] == [
        ['image.scene', 'image.wrist', 'patch_mask.scene', 'patch_mask.wrist']]


def test_exported_package_feeds_patch_masks_and_matches_upstream_and_torch(converted,
                                                                            tmp_path):
    src, model, spec, tok = converted
    images = _images()
    # the manifest round trip: steps, image rows
    pkg, policy, inputs, tokens = exported_vision(model, spec, tok, tmp_path, images)
    assert sorted(inputs.patch_masks) == sorted(model.cfg.cameras)
    up = load_file(str(src / 'model.safetensors'))
    ref = torch.cat([upstream_image_features(up, *(t[None] for t in upstream_preprocess(im)))
                     for im in images], 1)
    np.testing.assert_allclose(tokens, ref.numpy(), rtol=1e-4, atol=1e-4)

    assert_package_action_matches_torch(policy, inputs, model)


def test_manifest_takes_resize_pad_only_as_the_last_step_at_the_camera_size():
    from vla_ros.runtime.errors import PackageError
    from vla_ros.runtime.package.parse_parts import parse_camera
    from vla_ros.runtime.package.reader import Reader

    pad = {'op': 'resize_pad', 'size': 28, 'patch': 7, 'fill': 0.0, 'method': 'torch_bilinear'}
    cam = {'name': 'front', 'height': 28, 'width': 28, 'resize': 'bilinear',
           'norms': [{'mean': [0.5] * 3, 'std': [0.5] * 3}], 'steps': [pad]}
    assert parse_camera(Reader(cam, 'cameras[0]')).steps == (pad,)
    for bad in ({'steps': [pad, {'op': 'jpeg', 'quality': 90}]}, {'height': 32, 'width': 32},
                {'letterbox': True}):
        with pytest.raises(PackageError, match='resize_pad step must be the last step'):
            parse_camera(Reader({**cam, **bad}, 'cameras[0]'))
