"""DPM-Solver++(2S) as a diffsampler plugin solver (Lu et al. 2022, arXiv 2211.01095, Algorithm 1, r = 1/2).

Data prediction in lambda = -log(sigma) (alpha = 1 in the EDM form): with h = lambda_{i+1} - lambda_i and the
intermediate point s at lambda_i + h / 2, one step is

    u       = (sigma_s / sigma_i) x_i - expm1(-h / 2) D(x_i, sigma_i)
    x_{i+1} = (sigma_{i+1} / sigma_i) x_i - expm1(-h) D(u, sigma_s)

(eq. 11-12 of the paper with the first-order update to s): second order, 2 NFE per step. A step to sigma = 0 is
a first-order (Euler, = x_{i+1} = D) step of 1 NFE, as in k-diffusion's sample_dpmpp_2s_ancestral at eta = 0.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from diffsampler.solvers import register_solver
from diffsampler.solvers.base import data_estimate, finish

Denoiser = Callable[..., torch.Tensor]


def dpmpp_2s_step(
    denoiser: Denoiser, x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float, cond: Any
) -> torch.Tensor:
    """One DPM-Solver++(2S) step from sigma to sigma_next > 0, given D(x, sigma)."""
    h = math.log(sigma) - math.log(sigma_next)
    sigma_mid = math.sqrt(sigma * sigma_next)
    u = (sigma_mid / sigma) * x - math.expm1(-h / 2) * denoised
    return (sigma_next / sigma) * x - math.expm1(-h) * denoiser(u, sigma_mid, cond)


def dpmpp_2s(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    cond: Any = None,
    afs: bool = False,
    denoise_to_zero: bool = False,
) -> torch.Tensor:
    """DPM-Solver++(2S) over the grid; AFS replaces the first D(x, sigma_0) by x - sigma x / sqrt(1 + sigma^2)."""
    for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        denoised = data_estimate(denoiser, x, s, i, afs, False, cond)
        x = denoised if s_next == 0 else dpmpp_2s_step(denoiser, x, denoised, s, s_next, cond)
    return finish(denoiser, x, sigmas, denoise_to_zero, cond)


def register() -> None:
    """The entry point: add `dpmpp-2s` to diffsampler's solver registry."""
    register_solver(
        "dpmpp-2s",
        dpmpp_2s,
        2,
        "logsnr",
        "DPM-Solver++(2S), single-step second order in log sigma (arXiv 2211.01095), 2 NFE per step",
    )
