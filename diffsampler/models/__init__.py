"""Denoisers in the EDM form and the registry that builds them by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from diffsampler.errors import unknown_choice
from diffsampler.models.base import Denoiser
from diffsampler.models.builtin import fashion_mnist_mixture, toy_2d
from diffsampler.models.gaussian_mixture import GaussianMixture


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: how to build it and one line saying what it is."""

    name: str
    build: Callable[[], Denoiser]
    summary: str


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, build: Callable[[], Denoiser], summary: str) -> None:
    MODELS[name] = ModelEntry(name, build, summary)


register_model("gmm-fmnist", fashion_mnist_mixture, "analytic mixture on 500 Fashion-MNIST images, 1x32x32, std 0.1")
register_model("gmm-2d", toy_2d, "analytic 2-D mixture of 8 Gaussians on a circle")


def load_model(name: str) -> Denoiser:
    """Build a registered model by name."""
    if name not in MODELS:
        raise unknown_choice("model", name, MODELS)
    return MODELS[name].build()


__all__ = ["Denoiser", "GaussianMixture", "MODELS", "load_model", "register_model"]
