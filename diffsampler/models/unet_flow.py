"""The own U-Net trained as a flow-matching (velocity) model, in the EDM form through ``FlowDenoiser``.

The network is the same ``UNet`` F(x, c_noise) as the EDM model's, without EDM's preconditioning: F(x_t, 1000 t)
predicts the velocity v = eps - x0 of x_t = (1 - t) x0 + t eps (rectified flow, arXiv 2209.03003), so
D(x, sigma) = x_t - t F(x_t, 1000 t) (``diffsampler.models.flow``). 1000 t is DDPM's / SD3's timestep scale: with
the U-Net's sinusoidal embedding (scale 1) it spans the same frequencies as EDM's c_noise = ln(sigma) / 4 does.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from diffsampler.models.flow import FlowDenoiser, FlowTime
from diffsampler.models.unet import UNet, UNetConfig, UNetWrapper

FLOW_TIME_SCALE = 1000.0


class FlowUNetDenoiser(UNetWrapper, FlowDenoiser):
    """The U-Net as a velocity model; runs in its parameters' dtype or under autocast to ``autocast_dtype``.
    ``last_features`` is the pooled bottleneck, as for the EDM U-Net."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__(None, cfg.sample_shape, time=FlowTime(scale=FLOW_TIME_SCALE))
        self.config = cfg
        self.net = UNet(cfg)

    def velocity(self, x_t: torch.Tensor, time: torch.Tensor, cond: Any) -> torch.Tensor:
        dtype = self.net.conv_in.weight.dtype
        cast = self.autocast_dtype
        with contextlib.nullcontext() if cast is None else torch.autocast(x_t.device.type, dtype=cast):
            out = self.net(x_t.to(dtype), time.to(dtype))
        self.last_features = self.net.bottleneck if cast is None else self.net.bottleneck.to(dtype)
        return out

    def network_dtype(self, x: torch.Tensor) -> torch.dtype:
        return self.net.conv_in.weight.dtype
