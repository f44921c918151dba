"""Flow sampling toward the executing prefix: RTC's guided inpainting and replacement
inpainting.

`Guidance` is what the worker hands the policy: the executing plan sampled on the new chunk's
grid (action k at stamp + k dt), RTC's soft mask W over it (1 for the d steps the inference
delay covers, decaying to 0 at H - s), and the method.

guided (Black et al. 2025, Algorithm 1; kinetix `realtime_action`), in the paper's time tau
(0 = noise, 1 = data) with u = dx/dtau the data-direction velocity:
    A1 = x + (1 - tau) u(x)                    the denoiser's estimate of the clean chunk
    e  = W (Y - A1)                            weighted error against the prefix Y
    g  = e^T dA1/dx = e + (1 - tau) e^T du/dx  one VJP through the step (head_step_vjp graph)
    c  = min(beta, (1 - tau) / tau * (tau^2 + (1 - tau)^2) / (1 - tau)^2)
    x <- x + (u + c g) / n
The VJP is the exported graph's, so no autograd runs here. Note LeRobot's RTC uses the
identity for du/dx (chunking_review.md §1); this is the paper's form.
inpaint: before every Euler step the prefix, carried along the straight path from x0 to flow
time t, replaces the sample where W = 1 (softly where 0 < W < 1); W Y + (1 - W) x at the end.
No Jacobian and no guidance weight: a cheaper, different method.
Imports numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla_ros.runtime.package.manifest import Manifest
from vla_ros.runtime.policy.flow import euler_times

METHODS = ('inpaint', 'guided')
VJP_ROLE = 'head_step_vjp'


@dataclass(frozen=True)
class Guidance:
    actions: np.ndarray  # (H, A) the executing plan at the new chunk's times, robot space
    weights: np.ndarray  # (H,) RTC's soft mask (0 where the plan does not reach)
    method: str = 'inpaint'
    delay_steps: int = 0  # the inference delay the mask was made for

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f'guidance method {self.method!r} is not one of {METHODS}')


def guided_support(m: Manifest) -> str:
    """'' if the package can run guided RTC, else what is missing and what to do."""
    if m.head.type != 'flow_dit':
        return (f'rtc_guided needs a flow_dit head with a {VJP_ROLE} graph; {m.name} has a '
                f'{m.head.type} head (use rtc_blend or rtc_inpaint)')
    if not m.graphs_with_role(VJP_ROLE):
        return (f'rtc_guided needs the {VJP_ROLE} graph, which {m.name} lacks: re-export it '
                'with `vla-ros export ... --rtc-vjp` (or use rtc_blend or rtc_inpaint)')
    return ''


def guidance_weight(tau: float, beta: float) -> float:
    """RTC's pseudo-inverse guidance weight, clipped at beta (inf at tau = 0 -> beta)."""
    if tau <= 0.0:
        return beta
    inv_r2 = (tau ** 2 + (1 - tau) ** 2) / (1 - tau) ** 2
    return min(beta, (1 - tau) / tau * inv_r2)


def guided_solve(run, x0: np.ndarray, steps: int, known: np.ndarray, weights: np.ndarray,
                 noise_at: int, beta: float) -> np.ndarray:
    """Algorithm 1 on the run's flow head. known: (H, A) prefix in model space; weights
    (H, A), already zero on padding dims."""
    sign = 1 - 2 * noise_at  # u = sign * v, dtau = 1 / steps
    x = np.asarray(x0, np.float32)
    for t in euler_times(noise_at, steps):
        tau = t if noise_at == 0 else 1.0 - t
        v = run.velocity(x[None], t)[0]
        a1 = x + (1 - tau) * sign * v
        e = (weights * (known - a1)).astype(np.float32)
        _, jv = run.velocity_vjp(x[None], t, e[None])
        g = e + (1 - tau) * sign * jv[0]
        x = (x + (sign * v + guidance_weight(tau, beta) * g) / steps).astype(np.float32)
    return x


def inpaint_solve(run, x0: np.ndarray, steps: int, known: np.ndarray, weights: np.ndarray,
                  noise_at: int) -> np.ndarray:
    """Replacement inpainting (weights (H, 1))."""
    dt = (1 - 2 * noise_at) / steps
    x0 = np.asarray(x0, np.float32)
    x = x0
    for t in euler_times(noise_at, steps):
        tau = t if noise_at == 0 else 1.0 - t  # progress toward the data
        x = weights * ((1 - tau) * x0 + tau * known) + (1 - weights) * x
        x = run.euler_step(x, t, dt)
    return (weights * known + (1 - weights) * x).astype(np.float32)
