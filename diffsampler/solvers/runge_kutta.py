"""One-step (Runge-Kutta type) solvers on dx/dsigma = (x - D(x, sigma)) / sigma.

Euler (= DDIM in the EDM form), Heun (EDM, arXiv 2206.00364 Algorithm 1) and DPM-Solver-2
(arXiv 2206.00927 Algorithm 1, intermediate point geometric in sigma). Heun and DPM-Solver-2
correct on every step, including the last one, unless the grid ends at sigma = 0, where the
last step is an Euler step (k-diffusion's convention).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch

from diffsampler.solvers.base import (
    Afs,
    DenoiserFn,
    StepCallback,
    derivative,
    finish,
    first_derivative,
    report_derivative,
    step_from_infinity,
)
from diffsampler.solvers.options import Range


def euler(
    denoiser: DenoiserFn,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    cond: Any = None,
    callback: StepCallback | None = None,
    afs: Afs = False,
    denoise_to_zero: bool = False,
) -> torch.Tensor:
    """x_{i+1} = x_i + (s_{i+1} - s_i) d_i: first order, 1 NFE per step (from sigma = inf: x_1 = s_1 x + D)."""
    for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        if math.isinf(s):
            x = step_from_infinity(denoiser, x, s_next, afs, cond, callback)[0]
            continue
        d = first_derivative(denoiser, x, s, i, afs, cond)
        report_derivative(callback, i, s, x, d)
        x = x + (s_next - s) * d
    return finish(denoiser, x, sigmas, denoise_to_zero, cond)


def heun(
    denoiser: DenoiserFn,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    cond: Any = None,
    callback: StepCallback | None = None,
    afs: Afs = False,
    denoise_to_zero: bool = False,
) -> torch.Tensor:
    """Trapezoid rule: x_{i+1} = x_i + h (d(x_i, s_i) + d(x_i + h d_i, s_{i+1})) / 2, 2 NFE per step."""
    for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        d = first_derivative(denoiser, x, s, i, afs, cond)
        report_derivative(callback, i, s, x, d)
        x_euler = x + (s_next - s) * d
        if s_next == 0:
            x = x_euler
            continue
        x = x + (s_next - s) * 0.5 * (d + derivative(denoiser, x_euler, s_next, cond))
    return finish(denoiser, x, sigmas, denoise_to_zero, cond)


def dpm_solver_2(
    denoiser: DenoiserFn,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    cond: Any = None,
    callback: StepCallback | None = None,
    afs: Afs = False,
    denoise_to_zero: bool = False,
    r: Annotated[float, Range(0, 1, low_open=True)] = 0.5,
) -> torch.Tensor:
    """Midpoint s = s_{i+1}^r s_i^(1-r); x_{i+1} = x_i + h [d_s / (2r) + (1 - 1/(2r)) d_i], 2 NFE per step.

    With r = 1/2 this is DPM-Solver-2 of arXiv 2206.00927 (Algorithm 1) in the EDM form.
    """
    for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        d = first_derivative(denoiser, x, s, i, afs, cond)
        report_derivative(callback, i, s, x, d)
        if s_next == 0:
            x = x + (s_next - s) * d
            continue
        s_mid = s_next**r * s ** (1 - r)
        d_mid = derivative(denoiser, x + (s_mid - s) * d, s_mid, cond)
        x = x + (s_next - s) * (d_mid / (2 * r) + (1 - 1 / (2 * r)) * d)
    return finish(denoiser, x, sigmas, denoise_to_zero, cond)
