"""One stateless Euler integrator for flow-matching action heads, for numpy and torch alike.

Time conventions differ between the seed models, so every call names where the noise is:
  noise_at = 0  (Evo-1): x_t = (1 - t) noise + t a, v = a - noise, integrate t 0 -> 1.
  noise_at = 1  (A1, pi0): x_t = t noise + (1 - t) a, v = noise - a, integrate t 1 -> 0.
Either way x <- x + dt v with dt = (1 - 2 noise_at) / num_steps, so one loop serves both.
Warm start (A1's inter-layer truncated flow matching): x0 is the previous exit's action and
the schedule restarts at t = noise_at, as A1's anchor variant does (seeds.md 2b).
Imports nothing but the standard library; arrays only need +, * and a velocity function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

Array = TypeVar('Array')


def euler_times(noise_at: int, num_steps: int) -> list[float]:
    """The times at which velocity is evaluated, first to last."""
    if noise_at not in (0, 1):
        raise ValueError(f'noise_at must be 0 or 1, got {noise_at}')
    if num_steps < 1:
        raise ValueError(f'num_steps must be >= 1, got {num_steps}')
    dt = (1 - 2 * noise_at) / num_steps
    return [noise_at + i * dt for i in range(num_steps)]


def euler_integrate(velocity: Callable[[Array, float], Array], x0: Array, *, noise_at: int,
                    num_steps: int) -> Array:
    """Integrates dx/dt = velocity(x, t) from t = noise_at to t = 1 - noise_at."""
    dt = (1 - 2 * noise_at) / num_steps
    x = x0
    for t in euler_times(noise_at, num_steps):
        x = x + dt * velocity(x, t)
    return x


def sample_noise(rng: Any, shape: tuple[int, ...], kind: str) -> Any:
    """Initial noise of a numpy Generator: 'uniform' U[-1, 1] (Evo-1) or 'gaussian' (A1)."""
    if kind == 'uniform':
        return rng.uniform(-1.0, 1.0, size=shape).astype('float32')
    if kind == 'gaussian':
        return rng.standard_normal(size=shape).astype('float32')
    raise ValueError(f"noise kind {kind!r} is not 'uniform' or 'gaussian'")
