"""The one setup of every command that runs a model: load it, join the process group, place it, and fix the
sigma range (the config's ``sigma_min`` / ``sigma_max`` where given, else the model's own)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from diffsampler import distributed
from diffsampler.config import FULL_PRECISION
from diffsampler.device import native_bf16, resolve_device
from diffsampler.errors import UserError
from diffsampler.models import Denoiser, load_model


@dataclass(frozen=True)
class RunSetup:
    """The loaded model on this rank's device, the process group (rank 0 of 1 without torchrun), the sigma range
    and the network's precision."""

    denoiser: Denoiser
    world: distributed.World
    device: torch.device
    sigma_min: float
    sigma_max: float
    precision: str
    """The network's precision, resolved (float32 or bfloat16)."""


def resolve_precision(precision: str, supports_autocast: bool, device: torch.device) -> str:
    """``config.PRECISIONS`` -> float32 or bfloat16: auto is bfloat16 where the network can autocast (a U-Net) and
    the device runs bf16 natively."""
    if precision != "auto":
        return precision
    return "bfloat16" if supports_autocast and native_bf16(device) else "float32"


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved network precision: None for the network's own (float32)."""
    return None if precision == FULL_PRECISION else getattr(torch, precision)


def setup_run(
    model: str,
    device: str,
    sigma_range: tuple[float | None, float | None] = (None, None),
    trust_pickle: bool = False,
    model_options: Mapping[str, Any] | None = None,
    precision: str = FULL_PRECISION,
) -> RunSetup:
    """Load ``model`` (its network in ``precision``) and set it up (``setup_model``)."""
    return setup_model(load_model(model, trust_pickle, model_options), device, sigma_range, precision)


def setup_model(
    denoiser: Denoiser,
    device: str,
    sigma_range: tuple[float | None, float | None] = (None, None),
    precision: str = FULL_PRECISION,
) -> RunSetup:
    """Join torchrun's process group (if any), put the loaded model's network in ``precision`` on this rank's
    device and resolve ``sigma_range`` (None: the model's end); a range without 0 < sigma_min < sigma_max is a
    UserError."""
    world, dev = distributed.setup(resolve_device(device))
    precision = resolve_precision(precision, denoiser.supports_autocast, dev)
    denoiser.set_autocast(autocast_dtype(precision))
    denoiser.to(dev)
    lo = denoiser.sigma_min if sigma_range[0] is None else sigma_range[0]
    hi = denoiser.sigma_max if sigma_range[1] is None else sigma_range[1]
    if not 0 < lo < hi:
        raise UserError(f"need 0 < sigma_min < sigma_max, got sigma_min={lo}, sigma_max={hi}")
    return RunSetup(denoiser, world, dev, lo, hi, precision)
