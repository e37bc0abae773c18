"""The EDM training objective and the EMA of the weights (EDM, arXiv 2206.00364, section 5, Table 1).

Noise levels are lognormal, ln sigma ~ N(P_mean, P_std^2); the loss is
lambda(sigma) ||D(x0 + sigma n) - x0||^2 with lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2,
which makes the effective target of the raw network F unit-variance at every sigma.
"""

from __future__ import annotations

import torch

from diffsampler.models.base import Denoiser


def sample_sigmas(batch: int, p_mean: float, p_std: float, generator: torch.Generator) -> torch.Tensor:
    """sigma = exp(P_mean + P_std z), z ~ N(0, 1), float32 of shape (batch,) on the CPU."""
    return (p_mean + p_std * torch.randn(batch, generator=generator)).exp()


def loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def edm_loss(
    denoiser: Denoiser, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, sigma_data: float
) -> torch.Tensor:
    """Mean over batch and pixels of lambda(sigma) (D(x0 + sigma n, sigma) - x0)^2, in float32."""
    s = sigma.to(x0.device, torch.float32)[:, None, None, None]
    denoised = denoiser(x0 + s * noise, sigma.to(x0.device))
    return (loss_weight(s, sigma_data) * (denoised.float() - x0) ** 2).mean()


def ema_beta(batch_size: int, images_seen: int, halflife_images: float, rampup: float) -> float:
    """Decay per step from a half-life in images, ramped up early: half-life min(h, rampup * images seen)."""
    halflife = halflife_images if rampup == 0 else min(halflife_images, rampup * images_seen)
    return 0.5 ** (batch_size / halflife) if halflife > 0 else 0.0


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    """ema <- beta ema + (1 - beta) model, parameter by parameter (buffers copied)."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - beta)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)
