"""Analytic Gaussian-mixture denoiser: the exact D(x, sigma) of p0 = sum_k w_k N(mu_k, v_k I).

Noised by sigma, component k becomes N(mu_k, (v_k + sigma^2) I); the posterior mean is
D(x, sigma) = sum_k gamma_k(x) [mu_k + v_k / (v_k + sigma^2) (x - mu_k)], with the posterior
weights gamma_k computed in log space (Tweedie: D = x + sigma^2 grad log p_sigma(x)).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from diffsampler.errors import UserError
from diffsampler.models.base import Denoiser, sigma_batch


class GaussianMixture(Denoiser):
    """Mixture of K isotropic Gaussians over samples of any shape (vectors or images)."""

    def __init__(
        self,
        means: torch.Tensor,
        variances: float | Sequence[float] | torch.Tensor,
        weights: Sequence[float] | torch.Tensor | None = None,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
    ) -> None:
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim < 2:
            raise UserError("mixture means need shape (K, *sample_shape)")
        k = means.shape[0]
        var = torch.as_tensor(variances, dtype=torch.float64).flatten()
        var = var.expand(k).clone() if var.numel() == 1 else var
        w = (
            torch.full((k,), 1.0 / k, dtype=torch.float64)
            if weights is None
            else torch.as_tensor(weights, dtype=torch.float64)
        )
        if var.shape != (k,) or w.shape != (k,):
            raise UserError(f"a mixture of {k} components needs {k} variances and {k} weights")
        if (var <= 0).any() or (w <= 0).any():
            raise UserError("mixture variances and weights must be positive")
        self.sample_shape = tuple(means.shape[1:])
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.register_buffer("means", means.reshape(k, -1))
        self.register_buffer("variances", var)
        self.register_buffer("log_weights", torch.log(w / w.sum()))
        self.register_buffer("mean_sq", (self.means**2).sum(dim=1))

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def posterior_logits(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; mu_k, (v_k + sigma^2) I), shape (B, K), in float64."""
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        total_var = self.variances[None, :] + sigma.to(torch.float64)[:, None] ** 2
        dist2 = (flat**2).sum(dim=1, keepdim=True) - 2 * flat @ self.means.T + self.mean_sq[None, :]
        dist2 = dist2.clamp_min(0)
        return self.log_weights[None, :] - 0.5 * self.dim * torch.log(2 * math.pi * total_var) - dist2 / (2 * total_var)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        sig2 = sigma.to(torch.float64)[:, None] ** 2
        gamma = torch.softmax(self.posterior_logits(x, sigma), dim=1)
        total_var = self.variances[None, :] + sig2
        out = (gamma * sig2 / total_var) @ self.means + (gamma * self.variances[None, :] / total_var).sum(
            1, keepdim=True
        ) * flat
        return out.reshape(x.shape).to(x.dtype)

    def log_density(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """log p_sigma(x) per sample (for Tweedie checks and likelihood diagnostics)."""
        return torch.logsumexp(self.posterior_logits(x, sigma_batch(sigma, x)), dim=1)

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact mean (D,) and covariance (D, D) of the clean data distribution p0."""
        w = torch.exp(self.log_weights)
        mean = w @ self.means
        centred = self.means - mean
        cov = (centred.T * w) @ centred + torch.eye(self.dim, dtype=torch.float64) * (w @ self.variances)
        return mean, cov

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "components": int(self.means.shape[0])}
