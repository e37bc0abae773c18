"""Images in [-1, 1] to 8-bit pixels and PNG grids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffsampler.data.datasets import from_model_range


def save_grid(images: torch.Tensor | np.ndarray, path: str | Path, max_images: int = 64) -> None:
    """A square-ish grid of the first ``max_images`` images, 2-pixel gaps, as one PNG."""
    pixels = from_model_range(torch.as_tensor(images[:max_images]))
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
