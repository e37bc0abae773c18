"""Shared test fixtures: closed-form Gaussian ODE solutions and convergence-order measurement."""

from __future__ import annotations

import math

import torch

from diffsampler.models import GaussianMixture
from diffsampler.schedules import get_sigmas

GAUSS_MEAN = 0.7
GAUSS_STD = 0.5
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def single_gaussian(dim: int = 8) -> GaussianMixture:
    """N(mu, s^2 I) with mu a fixed non-trivial vector, as a one-component mixture."""
    mean = GAUSS_MEAN * torch.linspace(-1, 1, dim, dtype=torch.float64)[None]
    return GaussianMixture(mean, variances=GAUSS_STD**2, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)


def gaussian_exact(model: GaussianMixture, x_start: torch.Tensor, sigma_start: float, sigma_end: float) -> torch.Tensor:
    """x(sigma) = mu + (x_T - mu) sqrt((s^2 + sigma^2) / (s^2 + sigma_T^2)) for N(mu, s^2 I)."""
    mu = model.means[0].reshape(x_start.shape[1:])
    var = float(model.variances[0])
    return mu + (x_start - mu) * math.sqrt((var + sigma_end**2) / (var + sigma_start**2))


def latents(num: int, dim: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(num, dim, generator=gen, dtype=torch.float64) * SIGMA_MAX


def measured_order(
    sample,
    steps_list: list[int],
    schedule: str = "polynomial",
    dim: int = 8,
    sigma_max: float = SIGMA_MAX,
    sigma_min: float = SIGMA_MIN,
    rho: float | None = None,
) -> float:
    """Least-squares slope of -log(max error) against log(steps) on the closed-form Gaussian, sigma_max to sigma_min."""
    model = single_gaussian(dim)
    x0 = latents(16, dim) * (sigma_max / SIGMA_MAX)
    logs_n, logs_e = [], []
    for steps in steps_list:
        sigmas = get_sigmas(schedule, steps, sigma_min, sigma_max, rho)
        out = sample(model, x0.clone(), sigmas)
        err = (out - gaussian_exact(model, x0, sigma_max, sigma_min)).abs().max().item()
        logs_n.append(math.log(steps))
        logs_e.append(math.log(err))
    n = len(steps_list)
    mean_n, mean_e = sum(logs_n) / n, sum(logs_e) / n
    slope = sum((a - mean_n) * (b - mean_e) for a, b in zip(logs_n, logs_e)) / sum((a - mean_n) ** 2 for a in logs_n)
    return -slope
