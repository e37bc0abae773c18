"""The EDM training objective and the EMA of the weights (EDM, arXiv 2206.00364, section 5, Table 1).

Noise levels are lognormal, ln sigma ~ N(P_mean, P_std^2); the loss is
lambda(sigma) ||D(x0 + sigma n) - x0||^2 with lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2,
which makes the effective target of the raw network F unit-variance at every sigma.

The flow objective (rectified flow, arXiv 2209.03003; SD3, arXiv 2403.03206 sec. 3.1) trains the velocity:
x_t = (1 - t) x0 + t n, loss ||v(x_t, t) - (n - x0)||^2, with t logit-normal, logit(t) ~ N(m, s^2) (SD3 eq. 19; its
best-ranked sampling: it puts the training weight on the middle times, where the velocity is hardest to predict,
and none near t = 0 and 1, where it is nearly n - E[x0] or x0-independent).
"""

from __future__ import annotations

import torch

from diffsampler.models.base import Denoiser
from diffsampler.models.unet_flow import FlowUNetDenoiser


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


def sample_flow_times(batch: int, mean: float, std: float, generator: torch.Generator) -> torch.Tensor:
    """t = sigmoid(m + s z), z ~ N(0, 1): SD3's logit-normal, float32 of shape (batch,) on the CPU."""
    return torch.sigmoid(mean + std * torch.randn(batch, generator=generator))


def flow_loss(model: FlowUNetDenoiser, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Mean over batch and pixels of (v(x_t, t) - (n - x0))^2 with x_t = (1 - t) x0 + t n, in float32."""
    s = t.to(x0.device, torch.float32)[:, None, None, None]
    x_t = (1 - s) * x0 + s * noise
    v = model.velocity(x_t, model.time.scale * t.to(x0.device, torch.float32), None)
    return ((v.float() - (noise - x0)) ** 2).mean()


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
