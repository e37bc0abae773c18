"""A closed-form flow-matching model: the exact velocity of Gaussian data x0 ~ N(m, diag(s^2)).

With x_t = (1 - t) x0 + t eps, E[x0 | x_t] = m + (1 - t) s^2 (x_t - (1 - t) m) / ((1 - t)^2 s^2 + t^2) per
coordinate, and v = E[eps - x0 | x_t] = (x_t - E[x0 | x_t]) / t (at t = 1: v = x_t - m). The probability-flow ODE
dx_t / dt = v is linear and maps the noise eps at t = 1 to x_t = (1 - t) m + sqrt((1 - t)^2 s^2 + t^2) eps, so the
exact sample of eps is m + s eps (``exact_sample``).
"""

from __future__ import annotations

from typing import Any

import torch

from diffsampler.models.flow import FlowDenoiser, FlowTime
from diffsampler.schedules import FlowGrid


class GaussianFlow(FlowDenoiser):
    """The exact velocity field of N(mean, diag(std^2)) data, any shape; computed in the state's dtype."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, flow_grid: FlowGrid | None = None) -> None:
        super().__init__(None, tuple(mean.shape), flow_grid, FlowTime())
        self.register_buffer("mean", mean.detach().to(torch.float64).clone())
        self.register_buffer("std", std.detach().to(torch.float64).expand_as(mean).clone())

    def network_dtype(self, x: torch.Tensor) -> torch.dtype:
        return x.dtype

    def velocity(self, x_t: torch.Tensor, time: torch.Tensor, cond: Any) -> torch.Tensor:
        t = time.to(torch.float64).reshape(-1, *([1] * (x_t.ndim - 1)))
        m, var = self.mean, self.std**2
        x0 = m + (1 - t) * var * (x_t - (1 - t) * m) / ((1 - t) ** 2 * var + t**2)
        return ((x_t - x0) / t).to(x_t.dtype)

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact mean (D,) and covariance diag(s^2) (D, D) of the data, flattened (as ``GaussianMixture.moments``)."""
        return self.mean.flatten(), torch.diag(self.std.flatten() ** 2)

    def exact_sample(self, noise: torch.Tensor) -> torch.Tensor:
        """The ODE's exact map of the noise at t = 1 to data: m + s eps."""
        return (self.mean + self.std * noise.to(torch.float64)).to(noise.dtype)
