"""What each exported graph computes: thin nn.Modules over a VLA's parts, one per graph.

The decoder is cut after every exit layer; head parts that follow the decoder's depth (A1's
expert, VLA-Adapter's policy blocks) are cut at the same places, so a graph never holds
weights another graph holds. Batch size is 1 and every shape is static (one robot, one
observation; static shapes are what TensorRT optimizes best).

Graph I/O names are the runtime's contract (see vla_ros/runtime/pipeline.py):
  vision:        image.<camera> (1, C, S, S)               -> vision_tokens
  embed:         input_ids, vision_tokens [, state]        -> hidden
  segment:       hidden, attention_mask  -> hidden_out [, k_<l>, v_<l> | feat_<l>]
  head_context:  hidden, state                             -> ctx_k, ctx_v          (flow_dit)
  head_step:     noisy_actions, t, ctx_k, ctx_v            -> velocity             (flow_dit)
  head_embed:    noisy_actions, t, state -> suffix (flow_expert) | state -> x, proprio (bridge)
  head_segment:  suffix, attention_mask, k_<l>, v_<l> -> suffix_out | x, proprio, feat_<l> -> x_out
  head_out:      suffix -> velocity (flow_expert) | x -> actions (bridge)
  head:          hidden -> actions [, logits]                     (mlp_regression, nar_tokens)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from vla_ros.model.vla import VLA


@dataclass
class GraphPlan:
    name: str
    role: str
    module: nn.Module
    inputs: dict[str, torch.Tensor]  # example inputs, in call order
    outputs: list[str]
    layers: tuple[int, int] | None = None
    example_outputs: dict[str, torch.Tensor] = field(default_factory=dict)


class _Vision(nn.Module):
    def __init__(self, m: VLA) -> None:
        super().__init__()
        self.m = m

    def forward(self, *images: torch.Tensor) -> torch.Tensor:
        return self.m.encode_images(list(images))


class _Embed(nn.Module):
    def __init__(self, m: VLA, with_state: bool) -> None:
        super().__init__()
        self.m, self.with_state = m, with_state

    def forward(self, input_ids, vision_tokens, state=None):
        return self.m.embed(input_ids, vision_tokens, state)


class _Segment(nn.Module):
    def __init__(self, m: VLA, start: int, end: int, extras: str | None) -> None:
        super().__init__()
        self.m, self.start, self.end, self.extras = m, start, end, extras
        if extras == 'feat':
            self.register_buffer('positions', m.feature_positions(), persistent=False)

    def forward(self, hidden, attention_mask):
        h, outputs, kvs = self.m.segment(hidden, attention_mask, self.start, self.end)
        if self.extras == 'kv':
            return (h, *[t for kv in kvs for t in kv])
        if self.extras == 'feat':
            return (h, *[o[:, self.positions] for o in outputs])
        return h


class _DiTContext(nn.Module):
    def __init__(self, m: VLA) -> None:
        super().__init__()
        self.m = m

    def forward(self, hidden, state):
        return self.m.head.context(self.m.decoder.norm(hidden), state)


class _DiTStep(nn.Module):
    def __init__(self, m: VLA) -> None:
        super().__init__()
        self.m = m

    def forward(self, noisy_actions, t, ctx_k, ctx_v):
        return self.m.head.step(noisy_actions, t, ctx_k, ctx_v)


class _ExpertEmbed(nn.Module):
    def __init__(self, m: VLA) -> None:
        super().__init__()
        self.m = m

    def forward(self, noisy_actions, t, state):
        return self.m.head.embed(noisy_actions, t, state)


class _ExpertSegment(nn.Module):
    def __init__(self, m: VLA, start: int, end: int) -> None:
        super().__init__()
        self.m, self.start, self.end = m, start, end

    def forward(self, suffix, attention_mask, *kv):
        pairs = [(kv[2 * i], kv[2 * i + 1]) for i in range(self.end - self.start)]
        return self.m.head.run_layers(suffix, attention_mask, pairs, self.start)


class _Call(nn.Module):
    """Wraps one method of the head: out(), embed() and the like."""

    def __init__(self, m: VLA, fn: str) -> None:
        super().__init__()
        self.m, self.fn = m, fn

    def forward(self, *args):
        return getattr(self.m.head, self.fn)(*args)


class _BridgeSegment(nn.Module):
    def __init__(self, m: VLA, start: int, end: int) -> None:
        super().__init__()
        self.m, self.start = m, start

    def forward(self, x, proprio, *features):
        return self.m.head.run_blocks(x, proprio, list(features), self.start)


class _TokenHead(nn.Module):
    def __init__(self, m: VLA) -> None:
        super().__init__()
        self.m = m
        span = m.layout.actions
        self.start, self.end = span.start, span.end

    def forward(self, hidden):
        act = self.m.decoder.norm(hidden)[:, self.start:self.end]
        head = self.m.head
        if self.m.cfg.head.type == 'mlp_regression':
            return head(act)
        logits = head.logits(act)
        return head.decode(logits), logits


def segments_of(model: VLA) -> list[tuple[int, int]]:
    bounds, start = [], 0
    for e in model.cfg.exits:
        bounds.append((start, e + 1))
        start = e + 1
    return bounds


def _run(plan: GraphPlan) -> GraphPlan:
    with torch.no_grad():
        out = plan.module(*plan.inputs.values())
    out = out if isinstance(out, tuple) else (out,)
    plan.example_outputs = dict(zip(plan.outputs, out, strict=True))
    return plan


def plan_graphs(model: VLA, seed: int = 0) -> list[GraphPlan]:
    """The graphs of a model, each with example inputs computed by running the graphs
    before it (so every example is a real intermediate tensor)."""
    model.eval()
    cfg = model.cfg
    obs = model.fake_obs(1, seed)
    head_type = cfg.head.type
    plans: list[GraphPlan] = []
    images = {f'image.{c}': img for c, img in zip(cfg.cameras, obs['images'], strict=True)}
    vision = _run(GraphPlan('vision', 'vision', _Vision(model), images, ['vision_tokens']))
    plans.append(vision)
    embed_in = {'input_ids': obs['input_ids'],
                'vision_tokens': vision.example_outputs['vision_tokens']}
    if head_type == 'mlp_regression':
        embed_in['state'] = obs['state']
    embed = _run(GraphPlan('embed', 'embed', _Embed(model, 'state' in embed_in), embed_in,
                           ['hidden']))
    plans.append(embed)
    mask = obs['attention_mask']
    state = obs['state']
    extras = {'flow_expert': 'kv', 'bridge': 'feat'}.get(head_type)
    hidden = embed.example_outputs['hidden']
    seg_plans = []
    for i, (s, e) in enumerate(segments_of(model)):
        names = ['hidden_out']
        if extras == 'kv':
            names += [f'{kind}_{layer}' for layer in range(s, e) for kind in ('k', 'v')]
        elif extras == 'feat':
            names += [f'feat_{layer}' for layer in range(s, e)]
        p = _run(GraphPlan(f'segment_{i}', 'segment', _Segment(model, s, e, extras),
                           {'hidden': hidden, 'attention_mask': mask}, names, layers=(s, e)))
        seg_plans.append(p)
        hidden = p.example_outputs['hidden_out']
    plans += seg_plans
    h = cfg.chunk_len
    noisy = torch.randn(1, h, cfg.action_dim, generator=torch.Generator().manual_seed(seed + 1))
    t = torch.tensor([0.5])
    if head_type == 'flow_dit':
        ctx = _run(GraphPlan('head_context', 'head_context', _DiTContext(model),
                             {'hidden': hidden, 'state': state}, ['ctx_k', 'ctx_v']))
        plans.append(ctx)
        plans.append(_run(GraphPlan('head_step', 'head_step', _DiTStep(model),
                                    {'noisy_actions': noisy, 't': t, **ctx.example_outputs},
                                    ['velocity'])))
    elif head_type == 'flow_expert':
        emb = _run(GraphPlan('head_embed', 'head_embed', _Call(model, 'embed'),
                             {'noisy_actions': noisy, 't': t, 'state': state}, ['suffix']))
        plans.append(emb)
        suffix = emb.example_outputs['suffix']
        for i, seg in enumerate(seg_plans):
            s, e = seg.layers
            kv = {k: v for k, v in seg.example_outputs.items() if k != 'hidden_out'}
            p = _run(GraphPlan(f'head_segment_{i}', 'head_segment', _ExpertSegment(model, s, e),
                               {'suffix': suffix, 'attention_mask': mask, **kv},
                               ['suffix_out'], layers=(s, e)))
            plans.append(p)
            suffix = p.example_outputs['suffix_out']
        plans.append(_run(GraphPlan('head_out', 'head_out', _Call(model, 'out'),
                                    {'suffix': suffix}, ['velocity'])))
    elif head_type == 'bridge':
        emb = _run(GraphPlan('head_embed', 'head_embed', _Call(model, 'embed'),
                             {'state': state}, ['x', 'proprio']))
        plans.append(emb)
        x, proprio = emb.example_outputs['x'], emb.example_outputs['proprio']
        for i, seg in enumerate(seg_plans):
            s, e = seg.layers
            feats = {k: v for k, v in seg.example_outputs.items() if k.startswith('feat_')}
            p = _run(GraphPlan(f'head_segment_{i}', 'head_segment', _BridgeSegment(model, s, e),
                               {'x': x, 'proprio': proprio, **feats}, ['x_out'], layers=(s, e)))
            plans.append(p)
            x = p.example_outputs['x_out']
        plans.append(_run(GraphPlan('head_out', 'head_out', _Call(model, 'out'), {'x': x},
                                    ['actions'])))
    else:
        outputs = ['actions'] if head_type == 'mlp_regression' else ['actions', 'logits']
        plans.append(_run(GraphPlan('head', 'head', _TokenHead(model), {'hidden': hidden},
                                    outputs)))
    return plans
