"""Where the queue bench's chunks come from: a smooth reference plus a residual that makes
consecutive chunks disagree, as a learned policy's do.

scripted residuals (every strategy; guidance has nothing to act on):
  unimodal  per-chunk offset N(0, offset_std) per joint + per-step noise
  bimodal   per-chunk mode +-mode_rad (all joints, random sign) + per-step noise: a policy
            torn between two ways to do the task; averaging two chunks lands between them
flow residual (every strategy, and the only one rtc_inpaint / rtc_guided can steer): the
  residual is sampled by a real flow_dit package's ONNX head (one observation's context, the
  backbone run once), scaled to `flow_rms_rad`; with guidance, the executing plan minus the
  reference is the prefix the sampler is steered toward (guidance.py, the policy's own code).
Imports the runtime only (numpy, onnxruntime).
"""

from __future__ import annotations

import numpy as np

from vla_ros.runtime.chunking.merge import rtc_prefix_weights

SCENARIOS = ('unimodal', 'bimodal', 'flow')


class ScriptedResidual:
    def __init__(self, scenario: str, dof: int, chunk_len: int, offset_std: float,
                 step_std: float, mode_rad: float) -> None:
        if scenario not in ('unimodal', 'bimodal'):
            raise ValueError(f'scripted scenario {scenario!r} is not unimodal or bimodal')
        self.scenario, self.dof, self.h = scenario, dof, chunk_len
        self.offset_std, self.step_std, self.mode_rad = offset_std, step_std, mode_rad

    def __call__(self, rng: np.random.Generator, prefix=None) -> np.ndarray:
        if self.scenario == 'unimodal':
            base = rng.normal(0, self.offset_std, self.dof)
        else:
            base = np.full(self.dof, self.mode_rad * rng.choice((-1.0, 1.0)))
        return base + rng.normal(0, self.step_std, (self.h, self.dof))  # (H, dof)


class FlowResidual:
    """Residuals from a flow_dit package's head at its last exit (ONNX Runtime, CPU)."""

    def __init__(self, package_path: str, dof: int, flow_rms_rad: float, beta: float = 5.0,
                 num_steps: int | None = None, threads: int | None = None) -> None:
        from vla_ros.runtime.backends import load_backend
        from vla_ros.runtime.bench.package_bench import synthetic_observations
        from vla_ros.runtime.package.loader import load_package
        from vla_ros.runtime.policy.pipeline import ExitPipeline
        from vla_ros.runtime.policy.policy import Policy

        pkg = load_package(package_path)
        m = pkg.manifest
        if m.head.type != 'flow_dit':
            raise ValueError(f'the flow scenario needs a flow_dit package, {m.name} has '
                             f'{m.head.type}')
        if m.action.model_dim < dof:
            raise ValueError(f'{m.name} has {m.action.model_dim} action dims, the bench {dof}')
        backend = load_backend(pkg, threads=threads) if threads else load_backend(pkg)
        policy = Policy(pkg, backend)
        self.run = ExitPipeline(m, backend).start(
            policy.prepare(synthetic_observations(pkg, 1, 0)[0]))
        while not self.run.done:
            self.run.advance()
        self.name = m.name
        self.has_vjp = bool(m.graphs_with_role('head_step_vjp'))
        self.h, self.model_dim, self.dof = m.action.chunk_len, m.action.model_dim, dof
        self.noise_at, self.noise_kind = m.flow.noise_at, m.flow.noise
        self.steps = num_steps or m.flow.num_steps
        self.beta = beta
        probe = np.stack([self._sample(np.random.default_rng(i), None) for i in range(8)])
        self.center = probe.mean(axis=0)
        self.scale = flow_rms_rad / max(float(np.std(probe - self.center)), 1e-9)

    def _sample(self, rng, guide) -> np.ndarray:
        from vla_ros.runtime.policy.flow import sample_noise
        from vla_ros.runtime.policy.guidance import guided_solve, inpaint_solve

        x0 = sample_noise(rng, (self.h, self.model_dim), self.noise_kind)
        if guide is None:
            return self.run.action(x0, self.steps)
        known, w, method = guide
        if method == 'guided':
            wa = np.zeros_like(known)
            wa[:, :self.dof] = w[:, None]
            return guided_solve(self.run, x0, self.steps, known, wa, self.noise_at, self.beta)
        return inpaint_solve(self.run, x0, self.steps, known, w[:, None], self.noise_at)

    def __call__(self, rng: np.random.Generator, prefix=None) -> np.ndarray:
        """prefix: (residual of the executing plan (H, dof), covered (H,), delay steps,
        method) or None."""
        guide = None
        if prefix is not None:
            residual, covered, d, method = prefix
            known = np.zeros((self.h, self.model_dim), np.float32)
            known[:, :self.dof] = (residual / self.scale + self.center[:, :self.dof])
            w = rtc_prefix_weights(np.arange(self.h), d, self.h, max(self.h // 2, d))
            guide = (known, np.where(covered, w, 0.0).astype(np.float32), method)
        x = self._sample(rng, guide)
        return (x[:, :self.dof] - self.center[:, :self.dof]) * self.scale
