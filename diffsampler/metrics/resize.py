"""PIL's bicubic resize of float images, as two matrix products that run batched on any device.

clean-fid's "clean" protocol (Parmar et al., arXiv 2104.11222, sec. 3) resizes each channel as a
float32 PIL image ('F' mode) with bicubic filtering. That resize is linear and separable:
``Y = A_h X A_w^T`` with ``A`` of shape (out, in). Column j of ``A`` is PIL's own resize of the
unit impulse e_j, so the matrices carry PIL's exact filter taps (support, edge renormalisation);
results agree with PIL's per-image resize up to float32 rounding.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image


@functools.lru_cache(maxsize=32)
def pil_bicubic_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) float64 matrix whose column j is PIL's bicubic resize of the impulse e_j."""
    matrix = np.empty((size_out, size_in), np.float64)
    for j in range(size_in):
        row = np.zeros((1, size_in), np.float32)
        row[0, j] = 1.0
        resized = Image.fromarray(row, mode="F").resize((size_out, 1), resample=Image.BICUBIC)
        matrix[:, j] = np.asarray(resized, np.float64)[0]
    matrix.setflags(write=False)
    return matrix


def resize_bicubic(images: torch.Tensor, size: tuple[int, int] = (299, 299)) -> torch.Tensor:
    """Resize float images (..., H, W) to (..., size[0], size[1]) exactly as PIL's bicubic filter does."""
    height, width = images.shape[-2:]
    if (height, width) == tuple(size):
        return images
    rows = torch.tensor(pil_bicubic_matrix(height, size[0]), dtype=images.dtype, device=images.device)
    cols = torch.tensor(pil_bicubic_matrix(width, size[1]), dtype=images.dtype, device=images.device)
    return rows @ images @ cols.T
