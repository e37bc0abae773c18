"""Denoisers in the EDM form and the registry that builds them by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from diffsampler.errors import UserError, unknown_choice
from diffsampler.models.base import Denoiser
from diffsampler.models.builtin import fashion_mnist_mixture, gaussian_flow_2d, toy_2d
from diffsampler.models.external import LOADERS, external_kind, external_label, load_external
from diffsampler.models.gaussian_mixture import GaussianMixture
from diffsampler.models.python_model import is_python_model, load_python_model, python_label
from diffsampler.models.shipped import read_manifest, shipped_builder, summary
from diffsampler.plugins import load_group


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: how to build it and one line saying what it is."""

    name: str
    build: Callable[[], Denoiser]
    summary: str


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, build: Callable[[], Denoiser], summary: str) -> None:
    MODELS[name] = ModelEntry(name, build, summary)


def register_checkpoint(name: str, path: str | Path, summary: str) -> None:
    """Register an own U-Net checkpoint file under ``name``; it is read (and checked) when first built."""

    def build() -> Denoiser:
        from diffsampler.models.checkpoint import load_checkpoint

        return load_checkpoint(path)

    register_model(name, build, summary)


register_model("gmm-fmnist", fashion_mnist_mixture, "analytic mixture on 500 Fashion-MNIST images, 1x32x32, std 0.1")
register_model("gmm-2d", toy_2d, "analytic 2-D mixture of 8 Gaussians on a circle")
register_model(
    "gauss-flow-2d", gaussian_flow_2d, "analytic flow-matching model (exact velocity) of a 2-D Gaussian, shift 3"
)
for _name, _entry in read_manifest().items():
    register_model(_name, shipped_builder(_name, _entry), summary(_entry))


def load_plugins() -> None:
    """Add the models of installed plugins to ``MODELS``, once per process."""
    load_group("diffsampler.models", MODELS)


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
SPEC_SUFFIXES = (".yaml", ".yml")


def is_model_path(name: str) -> bool:
    """True when ``name`` names an own file (a checkpoint or a two-network spec) rather than a registered model."""
    load_plugins()
    return name not in MODELS and Path(name).suffix.lower() in CHECKPOINT_SUFFIXES + SPEC_SUFFIXES


def load_model(name: str, trust_pickle: bool = False, options: Mapping[str, Any] | None = None) -> Denoiser:
    """A registered model by name, an external checkpoint (``diffusers:PATH``, ``edm:PATH``), an own U-Net
    checkpoint (.pt) by path, or a two-network spec (.yaml).

    A ``python:FILE.py:NAME`` or ``python:package.module:NAME`` is the user's own network
    (``diffsampler.models.python_model``). ``trust_pickle`` allows pickles (they run code from the file);
    ``options`` go to external loaders and to the user's NAME.
    """
    if is_python_model(name):
        return load_python_model(name, options)
    load_plugins()
    external = external_kind(name)
    if external is not None:
        return load_external(*external, trust_pickle=trust_pickle, options=options)
    if options:
        raise UserError(
            f"model options ({', '.join(options)}) apply only to external and python: models, not to '{name}'"
        )
    if name in MODELS:
        return MODELS[name].build()
    suffix = Path(name).suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        from diffsampler.models.checkpoint import load_checkpoint

        return load_checkpoint(name)
    if suffix in SPEC_SUFFIXES:
        from diffsampler.config import read_yaml
        from diffsampler.models.two_network import load_two_network

        values = read_yaml(name)
        if values.get("kind") != "two_network":
            raise UserError(f"model spec {name} must have 'kind: two_network'")
        return load_two_network(name, values, load_model)
    raise UserError(
        f"{unknown_choice('model', name, MODELS)}, or a checkpoint path (.pt), two-network spec (.yaml) "
        "or diffusers:/edm:/python: model"
    )


def model_summary(name: str) -> str:
    """What ``name`` is, in one line: a registered model's summary, else the kind of file it names."""
    load_plugins()
    if name in MODELS:
        return MODELS[name].summary
    if is_python_model(name):
        return "the user's own Python model"
    external = external_kind(name)
    if external is not None:
        return f"external {external[0]} checkpoint"
    return "two-network spec" if Path(name).suffix.lower() in SPEC_SUFFIXES else "U-Net checkpoint file"


def model_label(name: str) -> str:
    """A short file-name-safe name for output folders: the registered name, ``<kind>-<stem>`` for an external
    checkpoint, ``<folder>-<stem>`` for an own checkpoint or spec."""
    if is_python_model(name):
        return python_label(name)
    if external_kind(name) is not None:
        return external_label(name)
    if not is_model_path(name):
        return name
    path = Path(name)
    return f"{path.parent.name}-{path.stem}" if path.parent.name else path.stem


__all__ = [
    "Denoiser",
    "GaussianMixture",
    "LOADERS",
    "MODELS",
    "load_model",
    "load_plugins",
    "model_label",
    "register_checkpoint",
    "register_model",
]
