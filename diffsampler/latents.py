"""Reproducible latents: sample i of seed s is always the same, whatever the batch or device."""

from __future__ import annotations

import numpy as np
import torch


def sample_seed(seed: int, index: int) -> int:
    """A 64-bit generator seed derived from (seed, index) by NumPy's SeedSequence hashing."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0]) >> 1


def standard_normal(indices: range | list[int], shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """z_i ~ N(0, I) of the given sample shape for each index, float64 on the CPU, shape (len, *shape)."""
    out = torch.empty((len(indices), *shape), dtype=torch.float64)
    gen = torch.Generator()
    for row, index in enumerate(indices):
        gen.manual_seed(sample_seed(seed, index))
        out[row] = torch.randn(shape, generator=gen, dtype=torch.float64)
    return out
