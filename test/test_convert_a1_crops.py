"""A1's "overlap-and-resize-c2" crop mode (the released LIBERO-exit checkpoint's) on a tiny
upstream-layout checkpoint, against an independent plain-torch restatement of upstream's
MultiModalPreprocessor for that mode (a1/data/model_preprocessor.py image_to_patches_and_tokens,
build_image_input_idx, __call__); the vision forward restated in a1_vision_case.py."""

import json

import numpy as np
import pytest
import torch
from a1_vision_case import (
    OPTIONS,
    PATCH,
    SIZE,
    assert_package_action_matches_torch,
    build_checkpoint,
    exported_vision,
    upstream_image_features,
    upstream_resize_and_pad,
)
from safetensors.torch import load_file

from vla_ros.export.checkpoint import load_checkpoint
from vla_ros.export.convert import ConvertError, convert_checkpoint
from vla_ros.export.exporter import camera_specs
from vla_ros.model.config import VisionConfig
from vla_ros.runtime.package.manifest import PromptSpec
from vla_ros.runtime.policy.preprocess import ImagePreprocessor, PromptBuilder

MODE = {'crop_mode': 'overlap-and-resize-c2', 'max_crops': 4, 'overlap_margins': [4, 4]}
GRID = SIZE // PATCH
ROWS = GRID // 2  # 2x2 pooling
TOKENS = ROWS * ROWS
INSTRUCTION = 'Put the bowl on the plate'


# --- upstream, restated -------------------------------------------------------------------

def _patches(x: torch.Tensor) -> torch.Tensor:
    """(S, S, C) -> (P, PATCH * PATCH * C): row-major patches, (dy, dx, c) inside each."""
    g = x.shape[0] // PATCH
    return x.reshape(g, PATCH, g, PATCH, -1).permute(0, 2, 1, 3, 4).reshape(g * g, -1)


def _block(tok) -> list[int]:
    row = [tok.token_to_id('<im_patch>')] * ROWS + [tok.token_to_id('<im_col>')]
    return [tok.token_to_id('<im_start>')] + row * ROWS + [tok.token_to_id('<im_end>')]


def upstream_crops(image: np.ndarray, tok, margins=(4, 4)):
    """One image in "overlap-and-resize-c2": (crops (n, P, ps*ps*3), image_masks (n, P), the
    image's tokens, image_input_idx (n, tokens) into those tokens)."""
    left, right = margins
    window = (GRID - left - right) * PATCH  # a crop less both margins, in pixels
    tiling = (1, 1)  # upstream overrides select_tiling's choice with this
    src, mask = upstream_resize_and_pad(image, tiling[0] * window + (left + right) * PATCH,
                                tiling[1] * window + (left + right) * PATCH)
    tiles, tile_masks = [], []
    for i in range(tiling[0]):
        for j in range(tiling[1]):
            y0, x0 = i * window, j * window
            tiles.append(_patches(src[y0:y0 + SIZE, x0:x0 + SIZE]))
            tile_masks.append(_patches(mask[y0:y0 + SIZE, x0:x0 + SIZE, None]).mean(-1))
    # A single tile keeps all its patches (both its margins are image edges), so its patch
    # ordering is the identity, after the global image's.
    glob, _ = upstream_resize_and_pad(image, SIZE, SIZE)
    crops = torch.stack([_patches(glob)] + tiles)
    # The tiles' masks padded with a row of -1 at the end (the global image has none of its own)
    masks = torch.cat([torch.stack(tile_masks), torch.full((1, GRID * GRID), -1.0)])
    tokens = _block(tok) * (1 + len(tiles))  # the global image's block first
    patch_pos = [i for i, t in enumerate(tokens) if t == tok.token_to_id('<im_patch>')]
    return crops, masks, tokens, torch.tensor(patch_pos).reshape(-1, TOKENS)


def _text(tok, instruction: str) -> list[int]:
    return tok.encode(OPTIONS['template'].format(instruction=instruction.lower()),
                      add_special_tokens=False).ids


# --- tests --------------------------------------------------------------------------------

def _convert(root, cameras=None):
    src = build_checkpoint(root / 'published', MODE)
    if cameras is not None:
        (src / 'vla_ros_convert.json').write_text(json.dumps({**OPTIONS, 'cameras': cameras}))
    convert_checkpoint(src, root / 'ckpt', 'a1', progress=False)
    model, spec, tok = load_checkpoint(root / 'ckpt')
    return src, model.eval(), spec, tok


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    return _convert(tmp_path_factory.mktemp('a1crops'))


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.integers(0, 256, (12, 50, 3), dtype=np.uint8),  # wide: all-padding rows
            rng.integers(0, 256, (45, 26, 3), dtype=np.uint8)]  # portrait: left/right pads


def _prepared(model, spec, image):
    pre = ImagePreprocessor(camera_specs(model.cfg, spec.camera)[0])
    return (torch.from_numpy(pre(image, 'rgb8')),
            torch.from_numpy(pre.patch_mask(*image.shape[:2])))


def test_a_camera_gives_the_global_image_and_one_crop_of_the_same_pixels_as_upstream(converted):
    src, model, spec, tok = converted
    up = load_file(str(src / 'model.safetensors'))
    for image in _images():
        pixels, mask = _prepared(model, spec, image)
        crops, masks, _, _ = upstream_crops(image, tok)
        assert crops.shape[0] == 2 and torch.equal(crops[0], crops[1])
        for margins in ((0, 0), (2, 6)):  # the fixed 1 x 1 tiling cancels the margins
            assert torch.equal(upstream_crops(image, tok, margins)[0], crops)
        assert torch.allclose(_patches(pixels[0].permute(1, 2, 0)), crops[0], atol=2e-6)
        assert torch.equal(mask[0], masks[0]) and bool((masks[1] == -1).all())
        with torch.no_grad():
            ours = model.encode_images([pixels], [mask])
        ref = upstream_image_features(up, crops, masks).reshape(1, 2 * TOKENS, -1)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
        # the crop block is not the global one: pad_embed's partial row on every patch
        assert (ours[:, :TOKENS] - ours[:, TOKENS:]).abs().max() > 1e-2


def test_prompt_has_each_cameras_global_and_crop_blocks_after_bos(converted):
    src, model, spec, tok = converted
    layout = model.layout.items
    assert [it['camera'] for it in layout if it['kind'] == 'image'] == [
        'front', 'front', 'wrist', 'wrist']
    prompt = PromptBuilder(PromptSpec(tokenizer_file=str(src / 'tokenizer.json'),
                                      template=spec.template, max_length=model.cfg.text_len,
                                      pad_id=model.cfg.pad_id, lowercase=spec.lowercase,
                                      layout=layout), str(src / 'tokenizer.json'))
    ids, mask = prompt(INSTRUCTION)
    # MultiModalPreprocessor.__call__ with no <|image|> in the text: images first, in order
    images = [upstream_crops(im, tok)[2] for im in _images()]
    ref = [tok.token_to_id('<|endoftext|>')] + images[0] + images[1] + _text(tok, INSTRUCTION)
    kept = np.flatnonzero(mask[0])[:-1]  # unpadded positions, less our proprio slot
    assert ids[0, kept].tolist() == ref


def test_features_of_both_blocks_are_added_at_upstreams_image_input_idx(tmp_path):
    # One camera: with several images and no <|image|> in the text, upstream offsets every
    # image's image_input_idx by 0 (its __call__), which only one image makes unambiguous.
    src, model, spec, tok = _convert(tmp_path, cameras=['front'])
    image = _images()[1]
    pixels, mask = _prepared(model, spec, image)
    _, _, tokens, idx = upstream_crops(image, tok)
    text = _text(tok, INSTRUCTION)
    prompt = PromptBuilder(PromptSpec(tokenizer_file=str(src / 'tokenizer.json'),
                                      template=spec.template, max_length=model.cfg.text_len,
                                      pad_id=model.cfg.pad_id, lowercase=spec.lowercase,
                                      layout=model.layout.items), str(src / 'tokenizer.json'))
    ids, mask_ids = prompt(INSTRUCTION)
    ref_ids = [tok.token_to_id('<|endoftext|>')] + tokens + text
    kept = np.flatnonzero(mask_ids[0])[:-1]
    assert ids[0, kept].tolist() == ref_ids
    with torch.no_grad():
        vis = model.encode_images([pixels], [mask])
        h = model.embed(torch.from_numpy(ids), vis, torch.zeros(1, model.cfg.state_dim))
    up = load_file(str(src / 'model.safetensors'))
    table = torch.cat([up['transformer.wte.embedding'], up['transformer.wte.new_embedding']])
    ref = table[torch.tensor(ref_ids)]
    # Molmo.forward: x[image_input_idx] += features, the index moved past BOS
    ref[(idx + 1).reshape(-1)] += vis[0]
    assert torch.allclose(h[0, kept], ref, atol=1e-6)


def test_exported_package_computes_both_blocks_per_camera_through_the_runtime(converted,
                                                                              tmp_path):
    src, model, spec, tok = converted
    images = _images()
    pkg, policy, inputs, tokens = exported_vision(model, spec, tok, tmp_path, images)
    assert [it.get('camera') for it in pkg.manifest.prompt.layout if it['kind'] == 'image'] == [
        'front', 'front', 'wrist', 'wrist']
    up = load_file(str(src / 'model.safetensors'))
    ref = torch.cat([upstream_image_features(up, *upstream_crops(im, tok)[:2]).reshape(
        1, 2 * TOKENS, -1) for im in images], 1)
    np.testing.assert_allclose(tokens, ref.numpy(), rtol=1e-4, atol=1e-4)

    assert_package_action_matches_torch(policy, inputs, model)


@pytest.mark.parametrize('overrides, match', [
    ({'overlap_margins': [3, 4]}, r'overlap_margins = \(3, 4\): only two multiples of the 2x2'),
    ({'max_crops': 0}, r'max_crops = 0: only at least 1'),
    ({'crop_mode': 'overlap-and-resize'}, r"crop_mode = 'overlap-and-resize' \(max_crops 4\)"),
])
def test_overlap_settings_upstream_would_fail_on_are_refused(tmp_path, overrides, match):
    src = build_checkpoint(tmp_path / 'published', {**MODE, **overrides})
    with pytest.raises(ConvertError, match=match):
        convert_checkpoint(src, tmp_path / 'ckpt', 'a1', progress=False)


def test_crop_mode_belongs_to_the_molmo_connector_and_names_the_bad_value():
    with pytest.raises(ValueError, match=r"VisionConfig.crop_mode = 'overlap-and-resize-c2'"):
        VisionConfig('internvit', crop_mode='overlap-and-resize-c2')
    with pytest.raises(ValueError, match=r"VisionConfig.crop_mode = 'tiles' is invalid"):
        VisionConfig('molmo_clip', image_size=28, patch_size=7, hidden_size=16, num_heads=2,
                     crop_mode='tiles')
    assert VisionConfig('molmo_clip', image_size=28, patch_size=7, hidden_size=16,
                        num_heads=2).blocks_per_camera == 1
