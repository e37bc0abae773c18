"""The training images of a run: loaded once, optionally subset and downsized, hashed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from diffsampler.data.datasets import load_images, to_model_range
from diffsampler.errors import UserError


@dataclass(frozen=True)
class TrainingData:
    """Images in [-1, 1] as float32 (N, C, S, S) and the sha256 of the uint8 pixels they came from."""

    images: torch.Tensor
    sha256: str


def pixels_sha256(pixels: np.ndarray) -> str:
    """sha256 over the shape and the uint8 bytes (N, H, W, C)."""
    h = hashlib.sha256(str(pixels.shape).encode())
    h.update(np.ascontiguousarray(pixels).tobytes())
    return h.hexdigest()


def training_data(source: str, max_images: int | None = None, image_size: int | None = None) -> TrainingData:
    """The first ``max_images`` images of ``source`` (any `load_images` source), area-downsized to
    ``image_size`` when given; images must be square."""
    pixels = load_images(source)
    if max_images is not None:
        pixels = pixels[:max_images]
    n, h, w, _ = pixels.shape
    if h != w:
        raise UserError(f"training images must be square, {source} has {h}x{w}")
    images = to_model_range(pixels)
    if image_size is not None and image_size != h:
        if image_size > h or h % image_size:
            raise UserError(f"image_size {image_size} must divide the data's size {h} (downsizing only)")
        images = F.interpolate(images, size=(image_size, image_size), mode="area")
    return TrainingData(images.contiguous(), pixels_sha256(pixels))
