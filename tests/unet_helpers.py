"""Shared pieces of the U-Net / PDM / training tests: tiny shapes and a one-thread CPU fixture."""

import numpy as np
import pytest
import torch

from diffsampler.models.unet import UNetConfig, UNetDenoiser


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread; the shared 2-core CI machine thrashes with more."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(**changes) -> UNetConfig:
    values = dict(
        image_size=8, channels=8, channel_mult=[1, 2], num_blocks=1, attention_resolutions=[4], head_channels=8
    )
    values.update(changes)
    return UNetConfig(**values)


def tiny_denoiser(seed: int = 0, **changes) -> UNetDenoiser:
    torch.manual_seed(seed)
    model = UNetDenoiser(tiny_config(**changes))
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    return model.eval()


def write_blob_images(path, n: int = 64, size: int = 8, seed: int = 0) -> str:
    """An .npz of n grey-scale images: a bright square at a random place on a dark ground."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 1), dtype=np.uint8)
    for k in range(n):
        r, c = rng.integers(0, size - 3, 2)
        images[k, r : r + 3, c : c + 3] = 255
    np.savez(path, images=images)
    return str(path)
