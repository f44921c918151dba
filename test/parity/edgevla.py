"""EdgeVLA parity driver (case: test/data/parity/edgevla, README there).

Laid out as a published training checkpoint (checkpoints/*.pt holding {"model": {module:
state dict}}). Upstream has no inference path, so the case is the teacher-forced forward: the
graphs are fed the case's ground-truth action tokens at the action positions and compared at
the letterboxed pixel values, prompt ids, projected patches, fused embeddings, decoder states,
the bin logits and the decoded / de-normalized actions. The deployed single-pass path (the
runtime from the raw observation, bin-of-zero tokens at the action positions) is checked where
upstream defines it: action 0 does not depend on what the action positions hold.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from parity import Check, check
from parity.common import checkpoint_tensor, host, open_policy, rms_norm


def arrange(case: Path, dst: Path) -> Path:
    import torch
    from safetensors.torch import load_file

    (dst / 'checkpoints').mkdir(parents=True)
    model: dict[str, dict] = {}
    for k, v in load_file(str(case / 'upstream.safetensors')).items():
        module, key = k.split('.', 1)
        model.setdefault(module, {})[key] = v
    torch.save({'model': model}, dst / 'checkpoints' / 'step-010000-epoch-01-loss=0.1.pt')
    shutil.copy(case / 'upstream_config.json', dst / 'config.json')
    for name in ('dataset_statistics.json', 'tokenizer.json'):
        shutil.copy(case / name, dst / name)
    return dst


def compare(case: Path, checkpoint: Path, package: Path, backend: str) -> list[Check]:
    from vla_ros.runtime.policy.policy import Observation

    z = np.load(case / 'case.npz')
    pkg, be, policy = open_policy(checkpoint, package, backend)
    m = pkg.manifest
    cam = m.cameras[0].name
    out: list[Check] = []
    pv = policy.images[cam](z['raw_image'], 'rgb8')
    out.append(check('pixel_values_dino', pv[0, :3], z['pixel_values_dino'], 1e-5))
    out.append(check('pixel_values_siglip', pv[0, 3:], z['pixel_values_siglip'], 1e-5))

    ids, mask = policy.prompt(str(z['instruction']))
    keep = mask[0] > 0
    n_img, n_act = int(z['num_patches']), int(z['gt_action_token_ids'].size)
    seq = ids[0, keep]
    ours_ids = np.r_[seq[:1], seq[1 + n_img:]]
    out.append(check('input_ids (prompt, action input, EOS)', ours_ids[:-n_act - 1],
                     z['input_ids'][:-n_act - 1], 0))
    # Teacher forcing, as the case: the ground-truth action tokens at the action positions.
    tf_ids = ids.copy()
    a0 = np.flatnonzero(keep)[-n_act - 1]
    tf_ids[0, a0:a0 + n_act] = z['gt_action_token_ids']

    image = np.concatenate([z['pixel_values_dino'], z['pixel_values_siglip']])[None]
    vis = be.run('vision', {f'image.{cam}': image.astype(np.float32)})['vision_tokens']
    out.append(check('projected_patches', host(be, vis)[0], z['projected_patches'], 1e-5,
                     relative=True))
    if backend == 'torch':
        import torch

        with torch.no_grad():
            feats = be.model.vision.features(torch.from_numpy(image.astype(np.float32)))
        out.append(check('vision_features', feats[0].numpy(), z['vision_features'], 1e-5))
    h = be.run('embed', {'input_ids': tf_ids, 'vision_tokens': vis})['hidden']
    out.append(check('llm_inputs_embeds', host(be, h)[0, keep], z['llm_inputs_embeds'], 1e-5,
                     relative=True))
    errs = []
    for seg in policy.pipeline.segments:
        h = be.run(seg.name, {'hidden': h, 'attention_mask': mask})['hidden_out']
        last = seg.layers[1] - 1
        got = host(be, h)[0, keep]
        if last == m.exits.num_layers - 1:
            got = rms_norm(got, checkpoint_tensor(checkpoint, 'decoder.norm.weight'), 1e-6)
        errs.append(check('hidden_states', got, z['hidden_states'][last + 1], 1e-5,
                          relative=True))
    out.append(max(errs, key=lambda c: c.max_abs_err))
    res = be.run('head', {'hidden': h})
    logits = host(be, res['logits'])[0]  # (7, 256) in bin order = ids vocab_size - 1 - k
    out.append(check('action_bin_logits', logits[:, ::-1], z['action_bin_logits'], 1e-5,
                     relative=True))
    vocab = int(z['tokenizer_vocab_size'])
    out.append(check('action_token_ids_pred', vocab - 1 - logits.argmax(-1),
                     z['action_token_ids_pred'], 0))
    a_norm = host(be, res['actions'])[0, 0]
    out.append(check('actions_normalized', a_norm, z['actions_normalized'], 1e-6))
    out.append(check('actions', policy.action_norm.denormalize(a_norm), z['actions'], 1e-6))

    # Deployed path from the raw observation (bin-of-zero tokens at the action positions):
    # action 0 is read before any action position, so it must equal upstream's.
    obs = Observation(images={cam: (z['raw_image'], 'rgb8')}, state=np.zeros(m.state.dim),
                      instruction=str(z['instruction']), stamp_s=0.0)
    chunk = policy.infer(obs)
    out.append(check('actions[0] (deployed, raw image)', chunk.actions[0, 0], z['actions'][0],
                     1e-6))
    policy.close()
    return out
