"""The flow head step's vector-Jacobian product as a forward-only graph (role `head_step_vjp`).

Real-time chunking's guided inpainting (Black et al. 2025, Algorithm 1) needs, at every Euler
step, e^T dv/dx for the step's velocity v(x, t): the gradient of the weighted prefix error
through the denoiser. ONNX Runtime and TensorRT run forward graphs only, so the VJP is traced
here, at export time, into a graph of ordinary ops:
  head_step_vjp: noisy_actions, t, ctx_k, ctx_v, cotangent -> velocity, vjp   (flow_dit)
with vjp = cotangent^T d velocity / d noisy_actions, the same as `torch.func.vjp` of the step.

How: `make_fx` traces `torch.func.vjp` of the step into aten ops (forward and backward), and
that graph is exported like every other graph. Two export obstacles are handled here: CPU
attention's fused backward kernel has no ONNX translation, so attention is traced as its math
form (softmax(q k^T s + mask) v, numerically the same op). The traced module's arguments
carry the graph's input names, so no folded constant is named like an input.
The graph carries a copy of the step's weights: it is optional (`vla-ros export --rtc-vjp`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from vla_ros.export.graphs import GraphPlan

VJP_ROLE = 'head_step_vjp'
VJP_INPUTS = ('noisy_actions', 't', 'ctx_k', 'ctx_v', 'cotangent')
VJP_OUTPUTS = ('velocity', 'vjp')


def _math_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                    **_):
    if dropout_p or is_causal:
        raise NotImplementedError('the VJP trace supports attention without dropout or a '
                                  'causal flag (the flow head uses neither)')
    s = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    a = (q @ k.transpose(-2, -1)) * s
    if attn_mask is not None:
        a = a + attn_mask
    return torch.softmax(a, dim=-1) @ v


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """F.scaled_dot_product_attention as explicit ops while tracing."""
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _math_attention
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


class StepVJP(nn.Module):
    """velocity and cotangent^T d velocity / d x of a flow_dit step, eager (the reference)."""

    def __init__(self, step: nn.Module) -> None:
        super().__init__()
        self.step = step

    def forward(self, noisy_actions, t, ctx_k, ctx_v, cotangent):
        v, pull = torch.func.vjp(lambda x: self.step(x, t, ctx_k, ctx_v), noisy_actions)
        return v, pull(cotangent)[0]


class _Traced(nn.Module):
    def __init__(self, gm: nn.Module) -> None:
        super().__init__()
        self.gm = gm

    def forward(self, noisy_actions, t, ctx_k, ctx_v, cotangent):
        return tuple(self.gm(noisy_actions, t, ctx_k, ctx_v, cotangent))


def vjp_plan(step_plan: GraphPlan, seed: int = 0) -> GraphPlan:
    """The VJP graph's plan, from the head_step plan: traced module, example inputs (a random
    cotangent) and the eager torch.func.vjp outputs it is verified against."""
    from torch.fx.experimental.proxy_tensor import make_fx

    inputs = dict(step_plan.inputs)
    g = torch.Generator().manual_seed(seed + 2)
    inputs['cotangent'] = torch.randn(inputs['noisy_actions'].shape, generator=g)
    eager = StepVJP(step_plan.module).eval()
    with math_attention():
        gm = make_fx(lambda *a: eager(*a))(*inputs.values())
    with torch.no_grad():
        ref = eager(*inputs.values())
    plan = GraphPlan('head_step_vjp', VJP_ROLE, _Traced(gm).eval(), inputs, list(VJP_OUTPUTS))
    plan.example_outputs = dict(zip(VJP_OUTPUTS, (r.detach() for r in ref), strict=True))
    return plan

