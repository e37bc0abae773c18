"""Discrete-time VP models (DDPM, latent diffusion) in the EDM denoiser form.

A model trained at timesteps k = 0..T-1 with cumulative products abar_k sees x_vp = sqrt(abar) x0 +
sqrt(1 - abar) eps. With sigma_k = sqrt((1 - abar_k) / abar_k) the EDM state is x = x_vp * sqrt(1 + sigma^2)
= x0 + sigma * eps (EDM arXiv 2206.00364 appendix C.3.1; k-diffusion's DiscreteEpsDDPMDenoiser), so the
network gets c_in * x with c_in = 1 / sqrt(1 + sigma^2) and the fractional timestep of sigma (log-linear
between training timesteps). Its output becomes D(x, sigma) by the prediction type:
epsilon: D = x - sigma * eps;  sample: D = x0_hat;  v_prediction (arXiv 2202.00512 eq. 9 ff.):
D = x / (1 + sigma^2) - sigma / sqrt(1 + sigma^2) * v.
"""

from __future__ import annotations

from typing import Any

import torch

from diffsampler.errors import unknown_choice
from diffsampler.models.base import Denoiser
from diffsampler.schedules import timestep_of_sigma

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """sigma_k = sqrt((1 - abar_k) / abar_k), float64, ascending in k."""
    abar = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64)
    return ((1 - abar) / abar).sqrt()


def _per_sample(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, *([1] * (x.ndim - 1)))


def x0_from_output(output: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """D(x, sigma) from a network output of the given prediction type (x in the EDM scale; sigma (B,) float64)."""
    s = _per_sample(sigma, x)
    if prediction_type == "epsilon":
        return (x - s * output).to(x.dtype)
    if prediction_type == "sample":
        return output.to(x.dtype)
    if prediction_type == "v_prediction":
        return (x / (1 + s**2) - s / (1 + s**2).sqrt() * output).to(x.dtype)
    raise unknown_choice("prediction type", prediction_type, PREDICTION_TYPES)


class DiscreteVPDenoiser(Denoiser):
    """EDM-form wrapper of a discrete-time VP network; subclasses implement ``network(x_in, t, cond)``.

    ``network`` gets the scaled input c_in * x in the network's dtype and float32 fractional
    timesteps (B,), and returns its raw output (eps, x0 or v) for the batch.
    """

    def __init__(self, alphas_cumprod: torch.Tensor, prediction_type: str, sample_shape: tuple[int, ...]) -> None:
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise unknown_choice("prediction type", prediction_type, PREDICTION_TYPES)
        self.prediction_type = prediction_type
        self.discrete_sigmas = sigmas_from_alphas_cumprod(alphas_cumprod)
        self.sigma_min = float(self.discrete_sigmas[0])
        self.sigma_max = float(self.discrete_sigmas[-1])
        self.sample_shape = tuple(sample_shape)

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional training timestep of each sigma (float64, on the CPU)."""
        return timestep_of_sigma(self.discrete_sigmas, sigma.detach().cpu())

    def network(self, x_in: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        raise NotImplementedError

    def network_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        c_in = _per_sample(1 / (1 + sigma**2).sqrt(), x)
        t = self.timestep(sigma).to(x.device, torch.float32)
        output = self.network((c_in * x).to(self.network_dtype()), t, cond)
        return x0_from_output(output, x, sigma, self.prediction_type)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "prediction_type": self.prediction_type,
            "timesteps": self.discrete_sigmas.numel(),
        }
