"""Runs a package's graphs for one observation, exit by exit.

`ExitPipeline.start(inputs)` runs the vision and embedding graphs; each `ExitRun.advance()`
runs the decoder segment up to the next exit (and, for heads that follow the decoder's depth,
their segment too); `ExitRun.advance_to(k)` runs every segment up to exit k, as one call of
the package's segment chain when it has one for exactly those segments (no decision falls
between them, so one fused graph does); `ExitRun.action()` produces the action at the current
exit with the package's head. The policy decides after each exit whether to go deeper.
Everything is in the model's space (normalized, padded); the policy converts to and from the
robot's.

Head types (see vla_ros/export/graphs.py for the graph contract):
  flow_dit      context graph once per exit, then Euler steps of the step graph (and, for
                RTC guidance, the step's VJP graph head_step_vjp when the package has it)
  flow_expert   Euler steps, each through the expert segments up to the exit
  bridge        policy blocks advance with the decoder; the out graph reads them at an exit
  mlp_regression, nar_tokens   one head graph on the exit's hidden state
Imports numpy only.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vla_ros.runtime.backends.base import Backend
from vla_ros.runtime.package.manifest import Manifest
from vla_ros.runtime.policy.flow import euler_integrate


@dataclass
class ModelInputs:
    """One observation in the model's space (batch 1)."""

    images: dict[str, np.ndarray]  # camera -> (1, C, H, W) float32, normalized
    input_ids: np.ndarray  # (1, T) int64
    attention_mask: np.ndarray  # (1, T) float32
    state: np.ndarray  # (1, S_model) float32, normalized and padded
    # camera -> (1, P) float32 image fraction per ViT patch, for vision graphs that take
    # `patch_mask.<camera>` (A1's pad_embed); made by the camera's resize_pad step.
    patch_masks: dict[str, np.ndarray] = field(default_factory=dict)


class ExitPipeline:
    def __init__(self, manifest: Manifest, backend: Backend) -> None:
        self.m = manifest
        self.backend = backend
        self.head = manifest.head.type
        self.segments = sorted(manifest.graphs_with_role('segment'), key=lambda g: g.layers)
        self.head_segments = sorted(manifest.graphs_with_role('head_segment'),
                                    key=lambda g: g.layers)
        self.exits = tuple(g.layers[1] - 1 for g in self.segments)
        # Segment chains by the exit index they end at (from the first segment only).
        self.chains = {self.exits.index(g.layers[1] - 1): g
                       for g in manifest.graphs_with_role('segment_chain')
                       if g.layers[0] == 0 and g.layers[1] - 1 in self.exits
                       and backend.has_graph(g.name)}
        self.has_state_embed = any(t.name == 'state' for t in manifest.graph('embed').inputs)
        self.has_vision = bool(manifest.graphs_with_role('vision'))
        self.patch_mask_inputs = tuple(
            t.name for g in manifest.graphs_with_role('vision') for t in g.inputs
            if t.name.startswith('patch_mask.'))
        # Evo-1's action_mask: the padded action dims are held at zero in the noise and in
        # every step's input, and zeroed in the result.
        self.action_mask = None
        if manifest.flow is not None and manifest.flow.action_mask:
            mask = np.zeros((1, manifest.action.chunk_len, manifest.action.model_dim), np.float32)
            mask[..., :manifest.action.dim] = 1.0
            self.action_mask = mask

    def start(self, inputs: ModelInputs, vision_tokens: Any = None) -> ExitRun:
        """`vision_tokens`: visual tokens computed elsewhere (1, cameras * tokens, D); the
        vision graph is then skipped (parity checks against upstream features)."""
        return ExitRun(self, inputs, vision_tokens)


class ExitRun:
    """One observation on its way down the decoder. Not thread-safe (the worker owns it)."""

    def __init__(self, pipe: ExitPipeline, inputs: ModelInputs, vision_tokens: Any = None
                 ) -> None:
        self.p = pipe
        self.inputs = inputs
        self.timings_ms: dict[str, float] = defaultdict(float)
        self.index = -1  # segments run so far - 1
        self._kv: list[dict[str, Any]] = []  # flow_expert: per segment, its K/V outputs
        self._ctx: tuple[Any, Any] | None = None
        self._ctx_index = -1
        feeds = {'input_ids': inputs.input_ids}
        if vision_tokens is not None:
            feeds['vision_tokens'] = vision_tokens
        elif pipe.has_vision:
            vision_feeds = {f'image.{c}': a for c, a in inputs.images.items()}
            for name in pipe.patch_mask_inputs:
                cam = name[len('patch_mask.'):]
                if cam not in inputs.patch_masks:
                    raise ValueError(f'the vision graph needs {name}; the camera {cam!r} has '
                                     'no resize_pad step to make it')
                vision_feeds[name] = inputs.patch_masks[cam]
            feeds['vision_tokens'] = self._run('vision', 'vision', vision_feeds)['vision_tokens']
        if pipe.has_state_embed:
            feeds['state'] = inputs.state
        self.hidden = self._run('embed', 'embed', feeds)['hidden']
        self._x = self._proprio = None
        if pipe.head == 'bridge':
            out = self._run('head', 'head_embed', {'state': inputs.state})
            self._x, self._proprio = out['x'], out['proprio']

    def _run(self, stage: str, graph: str, feeds: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        out = self.p.backend.run(graph, feeds)
        self.timings_ms[stage] += (time.perf_counter() - t0) * 1000.0
        return out

    @property
    def exit_layer(self) -> int | None:
        return self.p.exits[self.index] if self.index >= 0 else None

    @property
    def done(self) -> bool:
        return self.index >= len(self.p.exits) - 1

    def advance(self) -> int:
        """Runs the next decoder segment; returns the exit layer now reached."""
        if self.done:
            raise RuntimeError('the last exit was already reached')
        seg = self.p.segments[self.index + 1]
        out = self._run('segment', seg.name, {'hidden': self.hidden,
                                               'attention_mask': self.inputs.attention_mask})
        self.hidden = out.pop('hidden_out')
        self._reached(out)
        return self.exit_layer

    def advance_to(self, index: int) -> int:
        """Runs the segments up to exit `index` (an index into the exits); returns its layer."""
        if not self.index < index < len(self.p.exits):
            raise ValueError(f'exit index {index} is not past {self.index} and below '
                             f'{len(self.p.exits)}')
        chain = self.p.chains.get(index) if self.index == -1 else None
        if chain is None:
            while self.index < index:
                self.advance()
            return self.exit_layer
        out = self._run('segment', chain.name, {'hidden': self.hidden,
                                                 'attention_mask': self.inputs.attention_mask})
        self.hidden = out.pop('hidden_out')
        for seg in self.p.segments[:index + 1]:  # each segment's extras, as advance() has them
            names = {t.name for t in seg.outputs} - {'hidden_out'}
            self._reached({n: out[n] for n in names})
        return self.exit_layer

    def _reached(self, extras: dict[str, Any]) -> None:
        """Segment index + 1 has run; `extras`: its outputs besides hidden_out."""
        self.index += 1
        if self.p.head == 'flow_expert':
            self._kv.append(extras)
        elif self.p.head == 'bridge':
            hs = self.p.head_segments[self.index]
            self._x = self._run('head', hs.name, {'x': self._x, 'proprio': self._proprio,
                                                  **extras})['x_out']

    def action(self, noise: np.ndarray | None = None, num_steps: int = 10) -> np.ndarray:
        """The action at the current exit, (H, A_model). Flow heads integrate from `noise`
        (fresh noise or a warm start) for num_steps Euler steps."""
        if self.index < 0:
            raise RuntimeError('advance() to an exit first')
        head, be = self.p.head, self.p.backend
        if head in ('mlp_regression', 'nar_tokens'):
            return be.to_host(self._run('head', 'head', {'hidden': self.hidden})['actions'])[0]
        if head == 'bridge':
            return be.to_host(self._run('head', 'head_out', {'x': self._x})['actions'])[0]
        if noise is None:
            raise ValueError(f'a {head} head needs initial noise (or a warm-start action)')
        x0 = np.asarray(noise, dtype=np.float32).reshape(1, *noise.shape[-2:])
        x = euler_integrate(self._masked_velocity, x0, noise_at=self.p.m.flow.noise_at,
                            num_steps=num_steps)
        return self._mask(np.asarray(x, dtype=np.float32))[0]

    def euler_step(self, x: np.ndarray, t: float, dt: float) -> np.ndarray:
        """One Euler step of a flow head at the current exit: (H, A) -> (H, A)."""
        x = np.asarray(x, np.float32)[None]
        return (x + dt * self._masked_velocity(x, t))[0]

    def _mask(self, x: np.ndarray) -> np.ndarray:
        return x if self.p.action_mask is None else x * self.p.action_mask

    def _masked_velocity(self, x: np.ndarray, t: float) -> np.ndarray:
        return self.velocity(self._mask(x), t)

    def _context(self) -> tuple[Any, Any]:
        if self._ctx_index != self.index:
            out = self._run('head', 'head_context', {'hidden': self.hidden,
                                                     'state': self.inputs.state})
            self._ctx, self._ctx_index = (out['ctx_k'], out['ctx_v']), self.index
        return self._ctx

    def velocity_vjp(self, x: np.ndarray, t: float, cotangent: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """velocity and cotangent^T d velocity / dx for x, cotangent (1, H, A) at flow time
        t, from the exported VJP graph (flow_dit packages exported with --rtc-vjp)."""
        graphs = self.p.m.graphs_with_role('head_step_vjp')
        if self.p.head != 'flow_dit' or not graphs:
            raise ValueError('this package has no head_step_vjp graph; re-export it with '
                             '`vla-ros export ... --rtc-vjp`')
        ctx_k, ctx_v = self._context()
        feeds = {'noisy_actions': np.asarray(x, np.float32), 't': np.array([t], np.float32),
                 'ctx_k': ctx_k, 'ctx_v': ctx_v,
                 'cotangent': np.asarray(cotangent, np.float32)}
        out = self._run('head', graphs[0].name, feeds)
        be = self.p.backend
        return be.to_host(out['velocity']), be.to_host(out['vjp'])

    def velocity(self, x: np.ndarray, t: float) -> np.ndarray:
        """The flow head's velocity at the current exit for x (1, H, A) at flow time t."""
        be = self.p.backend
        feeds = {'noisy_actions': np.asarray(x, np.float32), 't': np.array([t], np.float32)}
        if self.p.head == 'flow_dit':
            ctx_k, ctx_v = self._context()
            feeds.update(ctx_k=ctx_k, ctx_v=ctx_v)
            return be.to_host(self._run('head', 'head_step', feeds)['velocity'])
        suffix = self._run('head', 'head_embed', {**feeds, 'state': self.inputs.state})['suffix']
        for seg, kv in zip(self.p.head_segments[:self.index + 1], self._kv, strict=False):
            feeds = {'suffix': suffix, 'attention_mask': self.inputs.attention_mask, **kv}
            suffix = self._run('head', seg.name, feeds)['suffix_out']
        return be.to_host(self._run('head', 'head_out', {'suffix': suffix})['velocity'])
