"""Built-in analytic models: a 2-D toy mixture, a Fashion-MNIST image-space mixture and a 2-D Gaussian flow model."""

from __future__ import annotations

import math
from importlib import resources

import numpy as np
import torch

from diffsampler.models.gaussian_flow import GaussianFlow
from diffsampler.models.gaussian_mixture import GaussianMixture
from diffsampler.schedules import FlowGrid

FMNIST_COMPONENT_STD = 0.1
"""Per-pixel std of each image-space component, in the [-1, 1] pixel scale."""


def toy_2d() -> GaussianMixture:
    """Eight Gaussians of std 0.1 evenly spaced on a circle of radius 2, equal weights."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return GaussianMixture(means, variances=0.1**2)


def fashion_mnist_images() -> np.ndarray:
    """The 500 shipped Fashion-MNIST training images as float64 (500, 1, 32, 32) in [-1, 1]."""
    with resources.files("diffsampler.models").joinpath("data/fmnist_means.npz").open("rb") as f:
        images = np.load(f)["images"]
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)), constant_values=0)
    return (padded.astype(np.float64) / 127.5 - 1.0)[:, None]


def fashion_mnist_mixture() -> GaussianMixture:
    """Equal-weight mixture centred on 500 Fashion-MNIST images (1x32x32), std 0.1 per pixel."""
    return GaussianMixture(torch.from_numpy(fashion_mnist_images()), variances=FMNIST_COMPONENT_STD**2)


def gaussian_flow_2d() -> GaussianFlow:
    """The exact velocity of 2-D Gaussian data, mean (1, -0.5), std (0.5, 0.25); its flow grid has shift 3 (SD3's)."""
    mean = torch.tensor([1.0, -0.5], dtype=torch.float64)
    return GaussianFlow(mean, torch.tensor([0.5, 0.25], dtype=torch.float64), FlowGrid(shift=3.0))
