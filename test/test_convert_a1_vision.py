"""The A1 converter's Molmo vision path, on a tiny checkpoint built in the upstream A1 layout
(the shared parity case's LLM and expert plus a seeded-random `vision_backbone`), against an
independent re-statement of upstream's forward in plain torch (a1_vision_case.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from a1_vision_case import (
    PATCH,
    SIZE,
    VB,
    WIDTH,
    assert_package_action_matches_torch,
    build_checkpoint,
    exported_vision,
    upstream_image_features,
    upstream_preprocess,
    upstream_prompt,
    vision_tensors,
)
from safetensors.torch import load_file

from vla_ros.export.checkpoint import load_checkpoint
from vla_ros.export.convert import ConvertError, convert_checkpoint
from vla_ros.export.exporter import camera_specs
from vla_ros.runtime.package.manifest import PromptSpec
from vla_ros.runtime.policy import image_ops
from vla_ros.runtime.policy.preprocess import ImagePreprocessor, PromptBuilder

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
