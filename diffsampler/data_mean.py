"""The data mean E[x0] that the data-mean analytical first step (``afs=mean``) takes for D(x, sigma_max).

Where it comes from, in order: an analytic model's exact mean (``moments()``); for a U-Net trained on data a shipped
model was trained on (the same ``data_sha256``), the per-pixel mean of those training images kept in the shipped
models' manifest; otherwise an estimate, the average of D(x, sigma_max) over ``ESTIMATE_LATENTS`` latents, cached on
disk under the model's hash. For the exact denoiser E_x[D(x, sigma)] = E[x0] at every sigma (the tower property of
D = E[x0 | x]), so the average estimates the mean the model itself has learnt.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from diffsampler.atomic import atomic_file
from diffsampler.latents import standard_normal
from diffsampler.metrics.ref_stats import CACHE_ENV
from diffsampler.models import Denoiser, read_manifest

ESTIMATE_LATENTS = 64
"""Latents (seed ``ESTIMATE_SEED``) averaged for the estimate: one batch, one NFE."""
ESTIMATE_SEED = 36


def default_cache_dir() -> Path:
    """``$DIFFSAMPLER_CACHE/data-mean``, else ``$XDG_CACHE_HOME`` or ``~/.cache``, then ``diffsampler/data-mean``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser() / "data-mean"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "diffsampler" / "data-mean"


def known_mean(denoiser: Denoiser) -> torch.Tensor | None:
    """The exact mean of an analytic model, or the manifest's training-data mean for a model trained on that data."""
    moments = getattr(denoiser, "moments", None)
    if callable(moments):
        return moments()[0].reshape(denoiser.sample_shape).to(torch.float64)
    data = denoiser.describe().get("checkpoint", {}).get("data_sha256")
    for entry in read_manifest().values():
        mean = entry.get("data_mean")
        if data is not None and mean is not None and entry.get("data_sha256") == data:
            return torch.tensor(mean["values"], dtype=torch.float64).reshape(mean["shape"])
    return None


def estimated_mean(denoiser: Denoiser, device: torch.device, cache_dir: Path | None = None) -> torch.Tensor:
    """The average of D(x, sigma_max) over ``ESTIMATE_LATENTS`` latents x = sigma_max z, cached by the model hash."""
    path = (cache_dir or default_cache_dir()) / f"{denoiser.describe()['sha256'][:24]}-{ESTIMATE_LATENTS}.pt"
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True).to(torch.float64)
        except (OSError, RuntimeError, EOFError):
            pass  # damaged: estimate again and overwrite
    z = standard_normal(range(ESTIMATE_LATENTS), denoiser.sample_shape, ESTIMATE_SEED).to(device)
    with torch.no_grad():
        mean = denoiser(z * denoiser.sigma_max, denoiser.sigma_max).to(torch.float64).mean(dim=0).cpu()
    with atomic_file(path) as tmp:
        torch.save(mean, tmp)
    return mean


def data_mean(denoiser: Denoiser, device: torch.device, cache_dir: Path | None = None) -> torch.Tensor:
    """E[x0] of the model's data, shape ``sample_shape``, float64: known where it can be, else estimated."""
    known = known_mean(denoiser)
    return known if known is not None else estimated_mean(denoiser, device, cache_dir)
