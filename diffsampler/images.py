"""Images in [-1, 1] to 8-bit pixels and PNG grids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8 by round((x + 1) * 127.5), clipped."""
    arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    return np.clip(np.rint((arr.astype(np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def save_grid(images: torch.Tensor | np.ndarray, path: str | Path, max_images: int = 64) -> None:
    """A square-ish grid of the first ``max_images`` images, 2-pixel gaps, as one PNG."""
    pixels = to_uint8(images[:max_images])
    n, h, w, c = pixels.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = np.full((rows * (h + 2) + 2, cols * (w + 2) + 2, c), 255, dtype=np.uint8)
    for k in range(n):
        r, q = divmod(k, cols)
        canvas[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + q * (w + 2) : 2 + q * (w + 2) + w] = pixels[k]
    Image.fromarray(canvas[..., 0] if c == 1 else canvas).save(path)


def save_scatter(points: torch.Tensor | np.ndarray, path: str | Path) -> None:
    """A scatter plot PNG of 2-D samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arr = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.scatter(arr[:, 0], arr[:, 1], s=4)
    ax.set_aspect("equal")
    fig.savefig(path)
    plt.close(fig)
