"""Denoisers in the EDM form and the registry that builds them by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from diffsampler.errors import UserError, unknown_choice
from diffsampler.models.base import Denoiser
from diffsampler.models.builtin import fashion_mnist_mixture, toy_2d
from diffsampler.models.external import LOADERS, external_kind, load_external
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


def load_model(name: str, trust_pickle: bool = False, options: Mapping[str, Any] | None = None) -> Denoiser:
    """Build a registered model by name, or load an external checkpoint (``diffusers:PATH``, ``edm-pkl:PATH``).

    ``trust_pickle`` allows pickles (they run code from the file); ``options`` go to external loaders.
    """
    external = external_kind(name)
    if external is not None:
        return load_external(*external, trust_pickle=trust_pickle, options=options)
    if name not in MODELS:
        raise unknown_choice("model", name, MODELS)
    if options:
        raise UserError(f"model options ({', '.join(options)}) apply only to external models, not to '{name}'")
    return MODELS[name].build()


__all__ = ["Denoiser", "GaussianMixture", "LOADERS", "MODELS", "load_model", "register_model"]
