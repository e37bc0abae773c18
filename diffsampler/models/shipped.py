"""Trained U-Nets shipped inside the package, registered by name (``fmnist-p1``, ``fmnist-p2``, ``fmnist-p4``).

``models/trained/manifest.json`` lists each model: its checkpoint file beside the manifest, the file's
sha256, and how it was made (config, data hash, steps, images seen, training time, hardware, final loss).
A checkpoint is a weights-only ``torch.save`` dict (``models/checkpoint.py``), so loading runs no code. The
file's sha256 is checked against the manifest before loading: a missing, truncated or altered file is
refused in one line.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from diffsampler.digest import file_sha256
from diffsampler.errors import UserError
from diffsampler.models.base import Denoiser

MANIFEST_FORMAT = "diffsampler-shipped-models"
MANIFEST_NAME = "manifest.json"


def trained_dir() -> Path:
    """The folder of the shipped checkpoints inside the installed package."""
    return Path(str(resources.files("diffsampler.models").joinpath("trained")))


def read_manifest(folder: Path | None = None) -> dict[str, dict[str, Any]]:
    """name -> manifest entry of every shipped model ({} when the package ships none)."""
    path = (folder or trained_dir()) / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"the shipped model manifest {path} is unreadable ({exc}); reinstall diffsampler") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise UserError(f"{path} is not a diffsampler model manifest; reinstall diffsampler")
    return dict(manifest["models"])


def verified_path(name: str, entry: dict[str, Any], folder: Path | None = None) -> Path:
    """The checkpoint file of shipped model ``name``, after checking it exists and matches the manifest's sha256."""
    path = (folder or trained_dir()) / entry["file"]
    if not path.is_file():
        raise UserError(f"built-in model '{name}' is missing its weights ({path}); reinstall diffsampler")
    if file_sha256(path) != entry["sha256"]:
        raise UserError(
            f"built-in model '{name}' is corrupt: {path} does not match the manifest's sha256; reinstall diffsampler"
        )
    return path


def shipped_builder(name: str, entry: dict[str, Any], folder: Path | None = None) -> Callable[[], Denoiser]:
    """A constructor that verifies and loads shipped model ``name`` when first called."""

    def build() -> Denoiser:
        from diffsampler.models.checkpoint import load_checkpoint

        return load_checkpoint(verified_path(name, entry, folder))

    return build


def summary(entry: dict[str, Any]) -> str:
    """One line for `diffsampler list`: what the model is and how much training it had."""
    return (
        f"{entry['description']}: P = {entry['unet']['patch_size']}, {entry['parameters'] / 1e6:.1f}M parameters, "
        f"{entry['images_seen'] / 1e3:.0f}k images in {entry['cpu_seconds'] / 60:.0f} CPU min"
    )
