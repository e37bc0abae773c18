"""A cheap stand-in for the Inception network, for testing the FID plumbing without the weights."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from diffsampler.metrics.inception import InceptionFeatures


class StandInNetwork:
    """Same preprocessing as the real network (PIL resize to 299, (x - 128) / 128), then a small fixed conv net."""

    def __init__(self, seed: int = 0, num_features: int = 24) -> None:
        self.identity = f"stand-in-{seed}-{num_features}"
        self.origin = "stand-in"
        self.loads = 0
        gen = torch.Generator().manual_seed(seed)
        conv = nn.Conv2d(3, num_features // 4, kernel_size=23, stride=23)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.05)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.1)
        trunk = nn.Sequential(conv, nn.Tanh(), nn.AdaptiveAvgPool2d(2))
        self.network = InceptionFeatures(trunk, self.identity, num_features)

    precision = "float32"

    @property
    def protocol(self) -> str:
        from diffsampler.metrics.ref_stats import PROTOCOL

        return PROTOCOL if self.precision == "float32" else f"{PROTOCOL}; {self.precision}"

    def at_precision(self, precision: str) -> "StandInNetwork":
        self.precision = self.network.precision = precision
        return self

    def load(self, device: torch.device | str = "cpu") -> InceptionFeatures:
        self.loads += 1
        return self.network.to(device)


def random_images(n: int, seed: int, size: int = 16, channels: int = 1, low: int = 0, high: int = 256) -> np.ndarray:
    """uint8 (n, size, size, channels) images with independent uniform pixels in [low, high)."""
    return np.random.default_rng(seed).integers(low, high, (n, size, size, channels)).astype(np.uint8)
