"""VLA-Adapter parity driver (case: test/data/parity/vla_adapter, README there).

Laid out as the published Hugging Face checkpoint; compared from the raw images, state and
instruction: the LIBERO image path, the pixel values, the prompt ids, the projected patches,
the fused embeddings, the decoder states at the exits, the bridge features of every layer (as
upstream indexes them), the normalized actions (upstream's two bf16 casts reproduced), the
de-normalized actions and the LIBERO gripper post-processing.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from parity import Check, check
from parity.common import checkpoint_tensor, host, open_policy, rms_norm


def arrange(case: Path, dst: Path) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True)
    w = load_file(str(case / 'upstream.safetensors'))
    groups = {'action_head.': {}, 'proprio_projector.': {}, '': {}}
    for k, v in w.items():
        g = next(p for p in groups if k.startswith(p))
        groups[g][k[len(g):]] = v
    save_file(groups[''], str(dst / 'model.safetensors'))
    for g, name in (('action_head.', 'action_head--checkpoint.pt'),
                    ('proprio_projector.', 'proprio_projector--checkpoint.pt')):
        torch.save({f'module.{k}': v for k, v in groups[g].items()}, dst / name)  # DDP
    shutil.copy(case / 'upstream_config.json', dst / 'config.json')
    for name in ('dataset_statistics.json', 'preprocessor_config.json', 'tokenizer.json'):
        shutil.copy(case / name, dst / name)
    return dst


def compare(case: Path, checkpoint: Path, package: Path, backend: str) -> list[Check]:
    from vla_ros.runtime.policy.policy import Observation
    from vla_ros.runtime.policy.preprocess import (
        ImagePreprocessor,
        apply_steps,
        postprocess_gripper,
    )

    z = np.load(case / 'case.npz')
    pkg, be, policy = open_policy(checkpoint, package, backend)
    m = pkg.manifest
    cams = [c.name for c in m.cameras]
    raws = [z['raw_full_image'], z['raw_wrist_image']]
    out: list[Check] = []

    # Images: the LIBERO eval steps, then the processor (PIL bicubic, normalize).
    steps = m.cameras[0].steps
    out.append(check('resized_images_224', [apply_steps(r, steps[:2]) for r in raws],
                     z['resized_images_224'], 1.0))
    out.append(check('center_cropped_images_224', [apply_steps(r, steps[2:]) for r in
                                                   z['resized_images_224']],
                     z['center_cropped_images_224'], 0.0))
    proc = {c: policy.images[c] for c in cams}
    after_steps = [ImagePreprocessor(replace(c, steps=())) for c in m.cameras]
    from_upstream_crop = np.concatenate(
        [p(img, 'rgb8') for p, img in zip(after_steps, z['center_cropped_images_224'],
                                          strict=True)], 1)
    out.append(check('pixel_values', from_upstream_crop[0], z['pixel_values'], 1e-5))
    ours = np.concatenate([proc[c](r, 'rgb8') for c, r in zip(cams, raws, strict=True)], 1)
    # One 8-bit level of the 224 px image (the lanczos3 rounding flip above) moves a pixel
    # value by at most 1/255/std_min after the bicubic weights (<= 1): 0.018.
    out.append(check('pixel_values_from_raw', ours[0], z['pixel_values'], 0.018))

    # Prompt ids: [tok0][patches][prompt rest][queries][stop]; padding (left) is masked.
    ids, mask = policy.prompt(str(z['instruction']))
    state = policy.state_norm.normalize(z['raw_state'])[None]
    out.append(check('normalized_state', state[0, :8], z['normalized_state'], 1e-6))
    keep = mask[0] > 0
    n_img = int(z['num_patches'])
    text = ids[0, keep][1 + n_img:-65]
    out.append(check('input_ids', np.r_[ids[0, 0], text], z['input_ids'], 0))

    # The graphs from the upstream pixel values (the model's parity, apart from the images).
    pv = z['pixel_values'][None].astype(np.float32)
    images = {c: pv[:, 6 * i:6 * i + 6] for i, c in enumerate(cams)}
    vis = be.run('vision', {f'image.{c}': a for c, a in images.items()})['vision_tokens']
    out.append(check('projected_patches', host(be, vis)[0], z['projected_patches'], 1e-5,
                     relative=True))
    if backend == 'torch':
        import torch

        with torch.no_grad():
            feats = be.model.vision.features(torch.from_numpy(np.concatenate(
                [images[c] for c in cams], 0)))
        out.append(check('vision_features', feats.reshape(-1, feats.shape[-1]).numpy(),
                         z['vision_features'], 1e-5))
    h = be.run('embed', {'input_ids': ids, 'vision_tokens': vis})['hidden']
    out.append(check('lm_inputs_embeds', host(be, h)[0, keep], z['lm_inputs_embeds'], 1e-5,
                     relative=True))
    hs = z['hidden_states']
    n_layers = m.exits.num_layers
    shift_q = n_img + int(z['num_prompt_tokens'])
    upstream_feat = np.concatenate([hs[:, :n_img], hs[:, shift_q:shift_q + 64]], 1)
    err_h, err_f = [], []
    x = be.run('head_embed', {'state': state.astype(np.float32)})
    x, proprio = x['x'], x['proprio']
    for seg, hseg in zip(policy.pipeline.segments, policy.pipeline.head_segments, strict=True):
        res = be.run(seg.name, {'hidden': h, 'attention_mask': mask})
        h = res.pop('hidden_out')
        last = seg.layers[1] - 1
        got = host(be, h)[0, keep]
        if last == n_layers - 1:
            got = rms_norm(got, checkpoint_tensor(checkpoint, 'decoder.norm.weight'), 1e-6)
        err_h.append(check('hidden_states', got, hs[last + 1], 1e-5, relative=True))
        for name, v in res.items():
            layer = int(name.split('_')[1])
            err_f.append(check('bridge_features', host(be, v)[0], upstream_feat[layer + 1],
                               1e-5, relative=True))
        x = be.run(hseg.name, {'x': x, 'proprio': proprio, **res})['x_out']
    out.append(max(err_h, key=lambda c: c.max_abs_err))
    out.append(max(err_f, key=lambda c: c.max_abs_err))
    a_norm = host(be, be.run('head_out', {'x': x})['actions'])[0]
    out.append(check('actions_normalized', a_norm, z['actions_normalized'], 1e-4))
    out.append(check('actions', policy.action_norm.denormalize(a_norm), z['actions'], 1e-4))

    # The whole runtime path from the raw observation.
    obs = Observation(images={c: (r, 'rgb8') for c, r in zip(cams, raws, strict=True)},
                      state=z['raw_state'], instruction=str(z['instruction']), stamp_s=0.0)
    chunk = policy.infer(obs)
    out.append(check('actions_env', chunk.actions, z['actions_env'], 1e-4))
    raw_actions = policy.action_norm.denormalize(_run_all(policy, obs))
    out.append(check('actions_from_raw', raw_actions, z['actions'], 1e-3))
    assert np.array_equal(postprocess_gripper(z['actions'], m.action.gripper), z['actions_env'])
    policy.close()
    return out


def _run_all(policy, obs) -> np.ndarray:
    run = policy.pipeline.start(policy.prepare(obs))
    while not run.done:
        run.advance()
    return run.action()
