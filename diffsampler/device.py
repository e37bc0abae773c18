"""The torch device a command runs on (a base module: imports nothing of the package but errors)."""

from __future__ import annotations

import torch

from diffsampler.errors import UserError


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when available, else the CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu")
    return torch.device(name)
