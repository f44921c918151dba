"""RTC guided inpainting (Black et al. 2025, Algorithm 1) on ONNX: the exported VJP graph of the
flow head step against torch.func.vjp, the guided solve against a torch transcription of the
paper's loop, and the refusal of packages without the graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_policy import observation, policy

from vla_ros.runtime.backends import load_backend
from vla_ros.runtime.policy.guidance import Guidance, guidance_weight, guided_solve
from vla_ros.runtime.policy.pipeline import ExitPipeline


def _run_at_last_exit(pkg, pol, obs):
    run = ExitPipeline(pkg.manifest, load_backend(pkg)).start(pol.prepare(obs))
    while not run.done:
        run.advance()
    return run


def test_exported_vjp_matches_torch_func_vjp_of_the_step(exported_vjp):
    model, pkg = exported_vjp
    run = _run_at_last_exit(pkg, policy(pkg), observation(pkg, seed=3))
    ctx_k, ctx_v = run._context()
    g = np.random.default_rng(1)
    h, a = pkg.manifest.action.chunk_len, pkg.manifest.action.model_dim
    for t in (0.0, 0.3, 0.9):
        x = g.standard_normal((1, h, a)).astype(np.float32)
        cot = g.standard_normal((1, h, a)).astype(np.float32)
        vel, vjp = run.velocity_vjp(x, t, cot)

        def step(xt, t=t):
            return model.head.step(xt, torch.tensor([t]), torch.from_numpy(ctx_k),
                                   torch.from_numpy(ctx_v))

        ref_v, pull = torch.func.vjp(step, torch.from_numpy(x))
        np.testing.assert_allclose(vel, ref_v.detach().numpy(), atol=1e-4)
        np.testing.assert_allclose(vjp, pull(torch.from_numpy(cot))[0].detach().numpy(), atol=1e-4)


def test_guidance_weight_is_the_pseudo_inverse_weight_clipped_at_beta():
    assert guidance_weight(0.0, 5.0) == 5.0
    # tau = 0.5: (1 - tau) / tau * (tau^2 + (1 - tau)^2) / (1 - tau)^2 = 1 * 0.5 / 0.25 = 2
    assert guidance_weight(0.5, 5.0) == pytest.approx(2.0)
    assert guidance_weight(0.1, 5.0) == 5.0


def test_guided_solve_matches_the_papers_loop_with_exact_vjp(exported_vjp):
    model, pkg = exported_vjp
    pol = policy(pkg, mode='full')
    run = _run_at_last_exit(pkg, pol, observation(pkg, seed=4))
    ctx_k, ctx_v = (torch.from_numpy(c) for c in run._context())
    h, a = pkg.manifest.action.chunk_len, pkg.manifest.action.model_dim
    g = np.random.default_rng(2)
    x0 = g.uniform(-1, 1, (h, a)).astype(np.float32)
    known = g.uniform(-1, 1, (h, a)).astype(np.float32)
    w = np.repeat(np.array([1.0, 0.6, 0.2, 0.0], np.float32)[:h, None], a, axis=1)
    got = guided_solve(run, x0, 5, known, w, noise_at=0, beta=5.0)
    # kinetix realtime_action, transcribed: tau = t here (Evo-1: noise at 0).
    x = torch.from_numpy(x0)[None]
    for i in range(5):
        tau = i / 5

        def denoise(xt, tau=tau):
            v = model.head.step(xt, torch.tensor([tau]), ctx_k, ctx_v)
            return xt + (1 - tau) * v, v

        x1, pull, v = torch.func.vjp(denoise, x, has_aux=True)
        err = (torch.from_numpy(known)[None] - x1) * torch.from_numpy(w)[None]
        corr = pull(err)[0]
        c = 5.0 if tau == 0 else min(5.0, (1 - tau) / tau * (tau ** 2 + (1 - tau) ** 2)
                                     / (1 - tau) ** 2)
        x = (x + (v + c * corr) / 5).detach()
    np.testing.assert_allclose(got, x[0].numpy(), atol=2e-4)


def test_guided_chunks_start_closer_to_the_prefix_than_free_ones(exported_vjp):
    _, pkg = exported_vjp
    pol = policy(pkg, mode='full')
    obs = observation(pkg)
    h, dim = pkg.manifest.action.chunk_len, pkg.manifest.action.dim
    prefix = np.tile(np.linspace(0.0, 1.0, dim), (h, 1))
    weights = np.array([1.0, 1.0] + [0.0] * (h - 2))
    pol.rng = np.random.default_rng(0)
    guided = pol.infer(obs, prefix=Guidance(prefix, weights, 'guided', 2)).actions
    pol.rng = np.random.default_rng(0)
    free = pol.infer(obs).actions
    assert np.abs(guided[:2] - prefix[:2]).mean() < 0.5 * np.abs(free[:2] - prefix[:2]).mean()


def test_zero_weights_leave_the_guided_chunk_unchanged(exported_vjp):
    _, pkg = exported_vjp
    pol = policy(pkg, mode='full')
    obs = observation(pkg)
    h, dim = pkg.manifest.action.chunk_len, pkg.manifest.action.dim
    pol.rng = np.random.default_rng(0)
    guided = pol.infer(obs, prefix=Guidance(np.ones((h, dim)), np.zeros(h), 'guided')).actions
    pol.rng = np.random.default_rng(0)
    np.testing.assert_allclose(guided, pol.infer(obs).actions, atol=1e-5)


def test_a_package_without_the_vjp_graph_refuses_guided_rtc_saying_re_export(exported):
    pkg = exported['evo1'][1]
    h, dim = pkg.manifest.action.chunk_len, pkg.manifest.action.dim
    with pytest.raises(ValueError, match='re-export .*--rtc-vjp'):
        policy(pkg, mode='full').infer(observation(pkg), prefix=Guidance(
            np.zeros((h, dim)), np.ones(h), 'guided'))
