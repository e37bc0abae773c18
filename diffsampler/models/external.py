"""Model names that point at external checkpoints: ``diffusers:PATH`` and ``edm-pkl:PATH`` (alias ``edm:``).

A path ending in ``.pkl`` is an EDM pickle and a folder holding ``model_index.json`` a diffusers
pipeline, even without a prefix. Loader modules are imported only when used (diffusers is optional).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from diffsampler.models.base import Denoiser

LOADERS: dict[str, str] = {
    "diffusers:PATH": (
        "diffusers folder or hub id: DDPM UNet2DModel, latent (AutoencoderKL) with optional text CFG, or a "
        "flow-matching SD3 / Flux pipeline"
    ),
    "python:FILE.py:NAME": (
        "your own network: NAME(**model_options) from a .py file or python:package.module:NAME; runs your code"
    ),
    "edm:PATH": (
        "EDM .pkl snapshot (NVlabs/edm networks; also edm-pkl:PATH); runs code from the file, needs --trust-pickle"
    ),
}

PREFIXES = {"diffusers:": "diffusers", "edm-pkl:": "edm-pkl", "edm:": "edm-pkl"}


def external_kind(name: str) -> tuple[str, str] | None:
    """(loader kind, path) when ``name`` names an external checkpoint, else None."""
    for prefix, kind in PREFIXES.items():
        if name.startswith(prefix):
            return kind, name[len(prefix) :]
    if name.endswith(".pkl"):
        return "edm-pkl", name
    if (Path(name).expanduser() / "model_index.json").is_file():
        return "diffusers", name
    return None


def external_label(name: str) -> str:
    """``<kind>-<file or folder name>`` of an external checkpoint name (see ``external_kind``)."""
    external = external_kind(name)
    if external is None:
        raise ValueError(f"{name} is not an external checkpoint")
    kind, path = external
    return f"{kind}-{Path(path).expanduser().resolve().stem}"


def load_external(
    kind: str, path: str, trust_pickle: bool = False, options: Mapping[str, Any] | None = None
) -> Denoiser:
    """Load an external checkpoint of the given loader kind."""
    if kind == "edm-pkl":
        from diffsampler.models.edm_pickle import load_edm_pickle

        return load_edm_pickle(path, trust_pickle, options)
    from diffsampler.models.diffusers_loader import load_diffusers

    return load_diffusers(path, options)
