"""Training losses with multi-exit supervision (A1): every exit's action comes from the shared
head, so the model learns to act from any depth and early exit has good actions to choose from.

Modes: 'random' supervises one exit per step, drawn uniformly (A1's random-exit training);
'all' averages the losses of every exit. Per head, the loss its paper trains with:
  flow_dit     MSE on v = a - noise, t ~ Beta(2, 2) clamped to [0.02, 0.98], noise U[-1, 1]
  flow_expert  MSE on v = noise - a, t ~ Beta(1.5, 1) * 0.999 + 0.001, Gaussian noise
  mlp_regression, bridge   L1 on the actions
  nar_tokens   cross-entropy over the action bins
`action_mask` (B, A) zeroes the padded action dimensions, as Evo-1's masks do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vla_ros.model.heads.bridge import BridgeHead
from vla_ros.model.vla import VLA

EXIT_MODES = ('random', 'all', 'last')


@dataclass
class Batch:
    images: list[torch.Tensor]  # per camera (B, C, H, W), normalized
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    state: torch.Tensor  # (B, S) normalized, padded
    actions: torch.Tensor  # (B, H, A) normalized, padded
    action_mask: torch.Tensor  # (B, A) 1 for real dimensions


def _masked_mean(err: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask[:, None, :].expand_as(err)
    return (err * m).sum() / m.sum().clamp(min=1.0)


def exit_loss(model: VLA, exit_index: int, h: torch.Tensor, outputs: list[torch.Tensor],
              kvs: list, batch: Batch, gen: torch.Generator | None) -> torch.Tensor:
    """The head's loss at one exit, from the decoder's state after that exit's layer."""
    cfg, head = model.cfg, model.head
    a, mask = batch.actions, batch.action_mask
    b = a.shape[0]
    layer = cfg.exits[exit_index]
    if cfg.head.type == 'flow_dit':
        t = torch.distributions.Beta(2.0, 2.0).sample((b,)).clamp(0.02, 0.98)
        noise = torch.rand(a.shape, generator=gen) * 2 - 1
        x_t = (1 - t)[:, None, None] * noise + t[:, None, None] * a
        ck, cv = head.context(model.decoder.norm(h), batch.state)
        return _masked_mean((head.step(x_t, t, ck, cv) - (a - noise)) ** 2, mask)
    if cfg.head.type == 'flow_expert':
        t = torch.distributions.Beta(1.5, 1.0).sample((b,)) * 0.999 + 0.001
        noise = torch.randn(a.shape, generator=gen)
        x_t = t[:, None, None] * noise + (1 - t)[:, None, None] * a
        suffix = head.run_layers(head.embed(x_t, t, batch.state), batch.attention_mask,
                                 kvs[:layer + 1], 0)
        return _masked_mean((head.out(suffix) - (noise - a)) ** 2, mask)
    if isinstance(head, BridgeHead):
        x, proprio = head.embed(batch.state)
        pos = model.feature_positions()
        x = head.run_blocks(x, proprio, [o[:, pos] for o in outputs[:layer + 1]], 0)
        return _masked_mean((head.out(x) - a).abs(), mask)
    span = model.layout.actions
    act = model.decoder.norm(h)[:, span.start:span.end]
    if cfg.head.type == 'mlp_regression':
        return _masked_mean((head(act) - a).abs(), mask)
    logits = head.logits(act)  # (B, H*A, bins)
    ce = F.cross_entropy(logits.transpose(1, 2), head.targets(a), reduction='none')
    return _masked_mean(ce.view(a.shape), mask)


def multi_exit_loss(model: VLA, batch: Batch, mode: str = 'random',
                    gen: torch.Generator | None = None) -> tuple[torch.Tensor, dict[int, float]]:
    """The training loss and the per-exit losses it was made of (for logging)."""
    if mode not in EXIT_MODES:
        raise ValueError(f'exit mode {mode!r} is not one of {EXIT_MODES}')
    exits = model.cfg.exits
    if mode == 'random':
        chosen = [int(torch.randint(len(exits), (1,), generator=gen))]
    elif mode == 'last':
        chosen = [len(exits) - 1]
    else:
        chosen = list(range(len(exits)))
    deepest = exits[max(chosen)]
    h = model.embed(batch.input_ids, model.encode_images(batch.images), batch.state)
    _, outputs, kvs = model.segment(h, batch.attention_mask, 0, deepest + 1)
    losses = {}
    for i in chosen:
        layer = exits[i]
        losses[layer] = exit_loss(model, i, outputs[layer], outputs, kvs, batch, gen)
    total = torch.stack(list(losses.values())).mean()
    return total, {k: float(v.detach()) for k, v in losses.items()}
