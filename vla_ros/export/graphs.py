"""What each exported graph computes: thin nn.Modules over a VLA's parts, one per graph.

The decoder is cut after every exit layer; head parts that follow the decoder's depth (A1's
expert, VLA-Adapter's policy blocks) are cut at the same places, so a graph never holds
weights another graph holds. Batch size is 1 and every shape is static (one robot, one
observation; static shapes are what TensorRT optimizes best).

Graph I/O names are the runtime's contract (see vla_ros/runtime/policy/pipeline.py):
  vision:        image.<camera> (1, C, S, S) [, patch_mask.<camera> (1, P)] -> vision_tokens
                 (patch_mask: each patch's image fraction, for a pad_embed connector)
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

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        n = len(self.m.cfg.cameras)
        masks = list(inputs[n:]) if self.m.cfg.vision.pad_embed else None
        return self.m.encode_images(list(inputs[:n]), masks)


class _Embed(nn.Module):
    def __init__(self, m: VLA, with_state: bool) -> None:
        super().__init__()
        self.m, self.with_state = m, with_state

    def forward(self, input_ids, *rest):
        if self.m.cfg.cameras:
            vision_tokens, rest = rest[0], rest[1:]
        else:
            vision_tokens = None
        return self.m.embed(input_ids, vision_tokens, rest[0] if rest else None)


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
            return (h, *self.m.bridge_features(outputs, self.start, self.positions))
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
        self.start, self.end = m.action_positions()

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


# Outputs that feed the next graph of the same kind under the input name it expects.
CARRY = {'hidden_out': 'hidden', 'suffix_out': 'suffix', 'x_out': 'x'}


@dataclass
class GraphDef:
    name: str
    role: str
    module: nn.Module
    inputs: list[str]
    outputs: list[str]
    layers: tuple[int, int] | None = None


def build_graphs(model: VLA) -> list[GraphDef]:
    """The graphs of a model in execution order (their modules share the model's weights)."""
    cfg = model.cfg
    head_type = cfg.head.type
    segs = segments_of(model)
    defs = []
    if cfg.cameras:  # a model without vision (A1 built text-and-state only) has no vision graph
        names = [f'image.{c}' for c in cfg.cameras]
        names += [f'patch_mask.{c}' for c in cfg.cameras] if cfg.vision.pad_embed else []
        defs.append(GraphDef('vision', 'vision', _Vision(model), names, ['vision_tokens']))
    embed_in = ['input_ids'] + (['vision_tokens'] if cfg.cameras else [])
    embed_in += ['state'] if model.layout.proprio is not None else []
    defs.append(GraphDef('embed', 'embed', _Embed(model, 'state' in embed_in), embed_in,
                         ['hidden']))
    extras = {'flow_expert': 'kv', 'bridge': 'feat'}.get(head_type)
    for i, (s, e) in enumerate(segs):
        names = ['hidden_out']
        if extras == 'kv':
            names += [f'{kind}_{layer}' for layer in range(s, e) for kind in ('k', 'v')]
        elif extras == 'feat':
            names += [f'feat_{layer}' for layer in range(s, e)]
        defs.append(GraphDef(f'segment_{i}', 'segment', _Segment(model, s, e, extras),
                             ['hidden', 'attention_mask'], names, (s, e)))
    if head_type == 'flow_dit':
        defs.append(GraphDef('head_context', 'head_context', _DiTContext(model),
                             ['hidden', 'state'], ['ctx_k', 'ctx_v']))
        defs.append(GraphDef('head_step', 'head_step', _DiTStep(model),
                             ['noisy_actions', 't', 'ctx_k', 'ctx_v'], ['velocity']))
    elif head_type == 'flow_expert':
        defs.append(GraphDef('head_embed', 'head_embed', _Call(model, 'embed'),
                             ['noisy_actions', 't', 'state'], ['suffix']))
        for i, (s, e) in enumerate(segs):
            kv = [f'{kind}_{layer}' for layer in range(s, e) for kind in ('k', 'v')]
            defs.append(GraphDef(f'head_segment_{i}', 'head_segment',
                                 _ExpertSegment(model, s, e), ['suffix', 'attention_mask', *kv],
                                 ['suffix_out'], (s, e)))
        defs.append(GraphDef('head_out', 'head_out', _Call(model, 'out'), ['suffix'],
                             ['velocity']))
    elif head_type == 'bridge':
        defs.append(GraphDef('head_embed', 'head_embed', _Call(model, 'embed'), ['state'],
                             ['x', 'proprio']))
        for i, (s, e) in enumerate(segs):
            feats = [f'feat_{layer}' for layer in range(s, e)]
            defs.append(GraphDef(f'head_segment_{i}', 'head_segment',
                                 _BridgeSegment(model, s, e), ['x', 'proprio', *feats],
                                 ['x_out'], (s, e)))
        defs.append(GraphDef('head_out', 'head_out', _Call(model, 'out'), ['x'], ['actions']))
    else:
        outputs = ['actions'] if head_type == 'mlp_regression' else ['actions', 'logits']
        defs.append(GraphDef('head', 'head', _TokenHead(model), ['hidden'], outputs))
    return defs


def chain_def(model: VLA) -> GraphDef:
    """Every segment as one module: the torch side of a package's segment chain (chain.py
    builds the ONNX one from the segment files), with the same name and outputs."""
    segs = [d for d in build_graphs(model) if d.role == 'segment']
    start, end = segs[0].layers[0], segs[-1].layers[1]
    extras = {'flow_expert': 'kv', 'bridge': 'feat'}.get(model.cfg.head.type)
    names = ['hidden_out'] + [n for d in segs for n in d.outputs if n != 'hidden_out']
    return GraphDef('segment_chain', 'segment_chain', _Segment(model, start, end, extras),
                    ['hidden', 'attention_mask'], names, (start, end))


def plan_graphs(model: VLA, seed: int = 0) -> list[GraphPlan]:
    """The graphs of a model, each with example inputs computed by running the graphs
    before it in order (so every example is a real intermediate tensor)."""
    model.eval()
    cfg = model.cfg
    obs = model.fake_obs(1, seed)
    values: dict[str, torch.Tensor] = {
        **{f'image.{c}': img for c, img in zip(cfg.cameras, obs['images'], strict=True)},
        **{f'patch_mask.{c}': m for c, m in zip(cfg.cameras, obs.get('patch_masks', ()),
                                                 strict=False)},
        'input_ids': obs['input_ids'], 'attention_mask': obs['attention_mask'],
        'state': obs['state'], 't': torch.tensor([0.5]),
        'noisy_actions': torch.randn(1, cfg.chunk_len, cfg.action_dim,
                                     generator=torch.Generator().manual_seed(seed + 1))}
    plans = []
    for d in build_graphs(model):
        plan = GraphPlan(d.name, d.role, d.module, {n: values[n] for n in d.inputs},
                         d.outputs, d.layers)
        with torch.no_grad():
            out = plan.module(*plan.inputs.values())
        out = out if isinstance(out, tuple) else (out,)
        plan.example_outputs = dict(zip(plan.outputs, out, strict=True))
        for name, value in plan.example_outputs.items():
            values[CARRY.get(name, name)] = value
        plans.append(plan)
    return plans
