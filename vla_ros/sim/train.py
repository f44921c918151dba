"""`vla-ros make-default`: the shipped default model, made from scratch by one command.

Steps (each cached under the work folder, so a re-run resumes):
1. expert demonstrations of the touch tasks in the tabletop scene (vla_ros/sim/expert.py);
2. the inputs prepared exactly as the runtime prepares them: a first export of the untrained
   model gives the package's own image preprocessors, prompt builder and normalizers;
3. training of a small multi-exit A1-family model (MLP regression head read at every exit,
   loss averaged over all exits, so every exit acts) on the CPU within a time budget, with
   training-only probes that teach where the blocks are and which one the words name
   (`probes`), and a check of that choice per exit (`ChoiceCheck`) logged as it trains;
4. export of the trained weights to the output package, then early-exit calibration on
   held-out demonstration frames.
The package's provenance records the command, data, steps and losses.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from vla_ros.sim.choice import ChoiceCheck
from vla_ros.sim.pick_scene import PICK_TASKS, pick_words
from vla_ros.sim.scene import SCENE_OF, SCENE_ROBOTS, scene_joint_names, task_words

DATA_VERSION = 3  # bump when collection changes, so cached demonstrations are not reused
PICK_DATA_VERSION = 1  # the same, for the pick tasks
TASKS = ('touch', *PICK_TASKS)


# Action heads make-default can train: the shipped models' regression head (A1 family) and
# Evo-1's flow-matching DiT (a flow head: what rtc_inpaint and rtc_guided act on).
HEADS = ('mlp_regression', 'flow_dit')


def default_config(head: str = 'mlp_regression'):
    """The default model: one small backbone, with the regression head (A1 family) or a flow
    DiT (Evo-1 family) of the same width."""
    from vla_ros.model.config import HeadConfig, LMConfig, VisionConfig, VLAConfig

    if head not in HEADS:
        raise ValueError(f'head {head!r} is not one of {HEADS}')
    lm = LMConfig(hidden_size=64, num_layers=6, num_heads=4, num_kv_heads=2,
                  intermediate_size=192, vocab_size=64, causal=False)
    vision = VisionConfig('molmo_clip', image_size=64, patch_size=8, hidden_size=64,
                          num_layers=2, num_heads=4, intermediate_size=128,
                          feature_layers=(-1, -2))
    head_cfg = HeadConfig(type=head, hidden_size=64, num_layers=2, num_heads=4,
                          intermediate_size=192, state_hidden=64, resnet_blocks=2)
    return VLAConfig(family='a1' if head == 'mlp_regression' else 'evo1', lm=lm, vision=vision,
                     head=head_cfg, cameras=('scene', 'wrist'), state_dim=6, action_dim=6,
                     chunk_len=8, text_len=8, exit_layers=(1, 2, 3, 4, 5))


def readout(model, normed):
    """(B, T, D) final-normed states at an exit -> (B, D), what the scene probes read: the
    action tokens' mean where the layout has action tokens, else every token's mean (a flow
    head reads the whole sequence as its context)."""
    span = model.layout.actions
    return (normed[:, span.start:span.end] if span is not None else normed).mean(1)


def task_names(robot: str, task: str = 'touch') -> tuple[str, ...]:
    """The state and action names of a default model: the joints the scene moves, and for
    the pick tasks the gripper (its action name, read as the fraction closed)."""
    from vla_ros.adapters.robots import robot_spec

    spec = robot_spec(robot)
    if task == 'touch':
        return spec.joint_names
    return scene_joint_names(robot) + (SCENE_ROBOTS[SCENE_OF[robot]].gripper,)


def _bounds(x: np.ndarray, pad: float = 0.05):
    from vla_ros.runtime.package.manifest import Normalization

    lo, hi = x.min(axis=0), x.max(axis=0)
    span = np.maximum(hi - lo, 1e-3)
    return Normalization('bounds', {'min': tuple(float(v) for v in lo - pad * span),
                                    'max': tuple(float(v) for v in hi + pad * span)})


class Prepared:
    """Training tensors in the model's space, made with the package's own preprocessing."""

    def __init__(self, pkg_dir: Path, demos: dict[str, np.ndarray], cameras) -> None:
        from vla_ros.runtime.package.loader import load_package
        from vla_ros.runtime.policy.preprocess import (
            ImagePreprocessor,
            PromptBuilder,
            SpaceNormalizer,
        )

        pkg = load_package(pkg_dir)
        m = pkg.manifest
        pre = {c.name: ImagePreprocessor(c) for c in m.cameras}
        prompt = PromptBuilder(m.prompt, str(pkg.path(m.prompt.tokenizer_file)))
        self.images = {c: np.stack([pre[c](img, 'rgb8')[0] for img in demos[c]])
                       for c in cameras}
        ids, masks = zip(*[prompt(str(s)) for s in demos['instruction']], strict=True)
        self.input_ids = np.concatenate(ids)
        self.attention_mask = np.concatenate(masks)
        self.state = SpaceNormalizer(m.state).normalize(demos['state'])
        self.action_norm = SpaceNormalizer(m.action)
        self.actions = self.action_norm.normalize(demos['actions'])
        self.cameras = cameras
        xy = demos['target_xy'].astype(np.float32)
        mean, std = xy.mean(0), xy.std(0).clip(1e-6)
        self.target = ((xy - mean) / std).astype(np.float32)
        if 'dest_xy' in demos:  # pick and place: where the block goes, too
            dest = ((demos['dest_xy'] - mean) / std).astype(np.float32)
            self.target = np.concatenate([self.target, dest], axis=1)
        self.blocks = ((demos['blocks_xy'] - mean) / std).reshape(len(xy), -1).astype(np.float32)

    def batch(self, idx: np.ndarray, state_noise: float = 0.0,
              rng: np.random.Generator | None = None):
        import torch

        from vla_ros.model.training import Batch

        a = torch.from_numpy(self.actions[idx])
        state = self.state[idx]
        if state_noise > 0:
            state = (state + (rng or np.random.default_rng()).normal(
                0, state_noise, state.shape)).astype(np.float32)
        return Batch(images=[torch.from_numpy(self.images[c][idx]) for c in self.cameras],
                     input_ids=torch.from_numpy(self.input_ids[idx]).long(),
                     attention_mask=torch.from_numpy(self.attention_mask[idx]).float(),
                     state=torch.from_numpy(state),
                     actions=a, action_mask=torch.ones(a.shape[0], a.shape[2]))


def probes(model, target_dim: int = 2):
    """Training-only probes (not exported), each a loss that teaches one step of the task
    which the action loss alone teaches slowly or not at all:
    - 'position': each visual token's grid position, from its content. The decoder's RoPE
      tells attention how far apart tokens are, not where a token sits in the image, so
      without this a block's place never reaches the action tokens (measured: a probe on the
      action tokens stayed at 13 cm error for every block).
    - 'blocks': every block's table position, in colour order, linearly from the visual
      tokens, so the vision tower marks where each colour is.
    - 'scene', 'target': every block's position and the named block's position from the
      action tokens' mean hidden state at an exit, so the decoder reads the places and learns
      which block the words name. Few frames need the words (once the arm moves, where it goes
      next is plain from the images), so the action loss alone left the choice at chance.
      `target_dim` 4: the named block's and the destination's position (pick and place)."""
    import torch
    from torch import nn

    from vla_ros.sim.scene import COLORS

    cfg = model.cfg
    d = cfg.lm.hidden_size
    per = cfg.vision.tokens_per_image
    g = int(round(per ** 0.5))
    rows, cols = np.meshgrid(np.arange(g), np.arange(g), indexing='ij')
    cells = np.stack([rows.ravel(), cols.ravel()], 1) / max(g - 1, 1) * 2 - 1
    p = nn.ModuleDict({
        'position': nn.Linear(d, 2),
        'blocks': nn.Linear(len(cfg.cameras) * per * d, 2 * len(COLORS)),
        'scene': nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 2 * len(COLORS))),
        'target': nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, target_dim))})
    p.register_buffer('cells', torch.from_numpy(
        np.tile(cells, (len(cfg.cameras), 1)).astype(np.float32)), persistent=False)
    return p


def training_loss(model, probe, batch, target, blocks, mode: str, probe_weight: float):
    """Mean over the supervised exits of the head's loss, plus the weighted mean of the probe
    losses. mode 'last': the deepest exit only; 'all': every exit (A1)."""
    import torch

    from vla_ros.model.training import exit_loss

    exits = model.cfg.exits
    chosen = [len(exits) - 1] if mode == 'last' else list(range(len(exits)))
    vision = model.encode_images(batch.images)
    h = model.embed(batch.input_ids, vision, batch.state)
    _, outputs, kvs = model.segment(h, batch.attention_mask, 0, exits[chosen[-1]] + 1)
    losses = []
    aux = [(probe['position'](vision) - probe.cells).abs().mean(),
           (probe['blocks'](vision.flatten(1)) - blocks).abs().mean()]
    for i in chosen:
        layer = exits[i]
        losses.append(exit_loss(model, i, outputs[layer], outputs, kvs, batch, None))
        feat = readout(model, model.decoder.norm(outputs[layer]))
        aux.append((probe['scene'](feat) - blocks).abs().mean())
        aux.append((probe['target'](feat) - target).abs().mean())
    act, aux_t = torch.stack(losses).mean(), torch.stack(aux).mean()
    return act + probe_weight * aux_t, float(act.detach()), float(aux_t.detach())


def train(model, data: Prepared, train_idx: np.ndarray, val_idx: np.ndarray, *,
          minutes: float, max_steps: int, batch_size: int = 32, lr: float = 1e-3,
          state_noise: float = 0.03, last_only: float = 0.6, probe_weight: float = 1.0,
          seed: int = 0, progress=print, on_eval=None) -> dict:
    """`state_noise`: Gaussian noise on the normalized state inputs (labels untouched), so
    the joint positions cannot stand in for what the cameras show. `last_only`: the fraction
    of the run that trains the deepest exit only. `probe_weight`: weight of the probe losses
    (`probes`). `on_eval(step)` runs after each validation and may add to the log."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    probe = probes(model, data.target.shape[1])
    opt = torch.optim.AdamW(list(model.parameters()) + list(probe.parameters()), lr=lr,
                            weight_decay=1e-4)
    warm = 200
    t0, step, log = time.monotonic(), 0, []
    budget = minutes * 60
    model.train()
    while step < max_steps and time.monotonic() - t0 < budget:
        # Warm-up, then a cosine decay over whichever ends first: the steps or the time.
        done = max(step / max_steps, (time.monotonic() - t0) / budget)
        for g in opt.param_groups:
            g['lr'] = lr * min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * done))
        idx = rng.choice(train_idx, batch_size, replace=False)
        # First the deepest exit alone, so the network learns to compute the task with its
        # whole depth (averaging every exit from the start pulls the solution into the first
        # layers, where language-to-block binding does not fit); then every exit (A1).
        mode = 'last' if done < last_only else 'all'
        loss, act, aux = training_loss(model, probe, data.batch(idx, state_noise, rng),
                                       torch.from_numpy(data.target[idx]),
                                       torch.from_numpy(data.blocks[idx]), mode, probe_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 200 == 0 or step == 50:
            val = evaluate_loss(model, data, val_idx)
            extra = on_eval(step) if on_eval is not None else {}
            log.append({'step': step, 'train_l1': act, 'train_probe_l1': aux,
                        'val_l1_per_exit': val, 's': round(time.monotonic() - t0, 1), **extra})
            progress(f'train: step {step}, L1 {act:.4f}, probe {aux:.3f}, val L1 per exit '
                     f'{[round(v, 4) for v in val.values()]}'
                     + ''.join(f', {k} {v}' for k, v in extra.items())
                     + f', {time.monotonic() - t0:.0f} s')
            model.train()
    model.eval()
    return {'steps': step, 'seconds': round(time.monotonic() - t0, 1),
            'final_val_l1_per_exit': evaluate_loss(model, data, val_idx), 'log': log[-5:]}


def evaluate_loss(model, data: Prepared, idx: np.ndarray) -> dict[str, float]:
    import torch

    from vla_ros.model.training import exit_loss

    model.eval()
    sums: dict[str, float] = {}
    with torch.no_grad():
        for start in range(0, len(idx), 256):
            b = data.batch(idx[start:start + 256])
            h = model.embed(b.input_ids, model.encode_images(b.images), b.state)
            _, outputs, kvs = model.segment(h, b.attention_mask, 0, model.cfg.exits[-1] + 1)
            for i, layer in enumerate(model.cfg.exits):
                v = float(exit_loss(model, i, outputs[layer], outputs, kvs, b, None))
                sums[str(layer)] = sums.get(str(layer), 0.0) + v * len(b.state)
    return {k: v / len(idx) for k, v in sums.items()}


def make_default(out_dir: str = 'models/default', work_dir: str = 'out/default-build',
                 robot: str = 'xarm6', episodes: int = 1200, minutes: float = 25.0,
                 max_steps: int = 20000, seed: int = 0, progress=print,
                 head: str = 'mlp_regression', task: str = 'touch',
                 resume: bool = False) -> Path:
    """`task`: 'touch' (the touch tasks), 'pick' or 'pick_place' (the physics tabletop,
    vla_ros/sim/pick_scene.py: the actions and state then carry the gripper too).
    `resume`: start from the weights of the work folder's last run (its checkpoint, same
    task and data) and train `minutes` more, every exit from the start, at half the learning
    rate; the provenance adds up both runs."""
    import torch

    from vla_ros.export.exporter import ExportSpec, export_package
    from vla_ros.export.tokenizer import word_tokenizer
    from vla_ros.model.vla import VLA
    from vla_ros.runtime.policy.calibration import CalibrationConfig, calibrate_package
    from vla_ros.runtime.policy.observations import save_observations
    from vla_ros.runtime.policy.policy import Observation
    from vla_ros.sim.expert import block_positions, collect, load_demos, save_demos
    from vla_ros.sim.pick_expert import collect_pick

    if robot not in SCENE_OF:
        raise ValueError(f'no tabletop scene for {robot!r}; one of {sorted(SCENE_OF)}')
    if task not in TASKS:
        raise ValueError(f'task {task!r} is not one of {TASKS}')
    pick = task != 'touch'
    work, out = Path(work_dir), Path(out_dir)
    work.mkdir(parents=True, exist_ok=True)
    demo_file = work / (f'demos-{task}-v{PICK_DATA_VERSION}-{robot}-{episodes}-{seed}.npz'
                        if pick else f'demos-v{DATA_VERSION}-{robot}-{episodes}-{seed}.npz')
    if demo_file.is_file():
        demos = load_demos(demo_file)
        progress(f'make-default: reusing {demo_file}')
    else:
        demos = (collect_pick(robot, episodes, task, seed0=seed, progress=progress) if pick
                 else collect(robot, episodes, seed0=seed, progress=progress))
        save_demos(demo_file, demos)
    if 'blocks_xy' not in demos:  # collected before these fields were recorded
        demos['target_xy'], demos['blocks_xy'] = block_positions(seed, demos['episode'])
    names = task_names(robot, task)
    cfg = default_config(head)
    cfg = replace(cfg, state_dim=len(names), action_dim=len(names))
    flow = head == 'flow_dit'
    demos['actions'] = demos['actions'][:, :cfg.chunk_len]
    spec = ExportSpec(
        name=f'vla-ros-default-{task.replace("_", "-")}-{robot}', state_names=names,
        action_names=names,
        dt_s=0.1, state_norm=_bounds(demos['state']),
        action_norm=_bounds(demos['actions'].reshape(-1, len(names))),
        embodiment={'robot': robot, 'scene': f'vla_ros tabletop {task} tasks'
                    + (' (pybullet contact physics)' if pick else '')},
        provenance={}, rtc_vjp=flow)
    tok = word_tokenizer(pick_words() if pick else task_words(), cfg.lm.vocab_size)
    torch.manual_seed(seed)
    model = VLA(cfg)
    before: dict = {}
    if resume:
        from vla_ros.export.checkpoint import load_checkpoint

        if not (work / 'checkpoint').is_dir() or not (work / 'train-stats.json').is_file():
            raise FileNotFoundError(f'--resume: no finished run in {work} (its checkpoint '
                                    'and train-stats.json)')
        model = load_checkpoint(work / 'checkpoint')[0]
        if model.cfg.to_dict() != cfg.to_dict():
            raise ValueError(f'--resume: the checkpoint in {work} is another model '
                             f'({model.cfg.family}/{model.cfg.head.type}) than this run asks')
        before = json.loads((work / 'train-stats.json').read_text())
    init_pkg = work / 'init-package'
    shutil.rmtree(init_pkg, ignore_errors=True)
    export_package(model.eval(), init_pkg, spec, tok, verify=False, progress=lambda _: None)
    data = Prepared(init_pkg, demos, cfg.cameras)
    ep = demos['episode']
    val_eps = max(1, int(ep.max() + 1) // 10)
    val_idx = np.flatnonzero(ep >= ep.max() + 1 - val_eps)
    train_idx = np.flatnonzero(ep < ep.max() + 1 - val_eps)
    n_params = sum(p.numel() for p in model.parameters())
    progress(f'make-default: {len(train_idx)} training / {len(val_idx)} held-out frames, '
             f'{n_params / 1e6:.2f} M parameters, up to {minutes:g} min')
    check = None if pick else ChoiceCheck(robot, demos, data, np.unique(ep[val_idx]), seed)
    stats = train(model, data, train_idx, val_idx, minutes=minutes, max_steps=max_steps,
                  seed=seed + (1 if resume else 0), progress=progress,
                  lr=5e-4 if resume else 1e-3, last_only=0.0 if resume else 0.6,
                  on_eval=None if check is None else
                  lambda step: {'choice per exit': check(model)})
    if check is not None:
        stats['first_frame_choice_per_exit'] = check(model)
    if before:
        stats['resumed_from'] = {k: before[k] for k in ('steps', 'seconds', 'resumed_from')
                                 if k in before}
        stats['total_steps'] = stats['steps'] + before.get('total_steps', before['steps'])
        stats['total_seconds'] = round(stats['seconds'] + before.get('total_seconds',
                                                                     before['seconds']), 1)
    spec = replace(spec, provenance={
        'made_by': 'vla-ros make-default ' + ' '.join(sys.argv[2:]) if len(sys.argv) > 2
        else 'vla-ros make-default',
        'robot': robot, 'task': task, 'episodes': episodes, 'frames': int(len(ep)),
        'expert_success': float(np.mean(demos['episode_success'])), 'seed': seed,
        'parameters': n_params, 'training': {k: v for k, v in stats.items() if k != 'log'},
        'head': head,
        'exit_loss': ('flow-matching MSE (Evo-1: t ~ Beta(2, 2), U[-1, 1] noise)' if flow
                      else 'L1') + ' at the deepest exit for the first 60% of the time, then '
                     'the mean over every exit (A1 all-exit training)'
                     + ('; resumed: every exit at half the learning rate' if resume else ''),
        'training_probes': 'visual token position, block positions from the visual tokens, '
                           'block and named-block positions from the '
                           + ('mean of all tokens' if flow else 'action tokens')
                           + ' at each supervised exit (weight 1; training only, not exported)'})
    from vla_ros.export.checkpoint import save_checkpoint

    save_checkpoint(work / 'checkpoint', model, spec, tok)
    tmp = work / 'package'
    shutil.rmtree(tmp, ignore_errors=True)
    export_package(model, tmp, spec, tok, progress=progress)
    rng = np.random.default_rng(seed + 1)
    pick = rng.choice(val_idx, min(200, len(val_idx)), replace=False)
    obs = [Observation({c: (demos[c][i], 'rgb8') for c in cfg.cameras}, demos['state'][i],
                       str(demos['instruction'][i]), 0.0) for i in pick]
    calib = save_observations(work / 'calibration.npz', obs)
    calibrate_package(tmp, calib, CalibrationConfig(budgets=(0.4, 0.6, 0.8)),
                      progress=progress)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(tmp, out)
    (work / 'train-stats.json').write_text(json.dumps(stats, indent=1) + '\n')
    progress(f'make-default: wrote {out}')
    return out
