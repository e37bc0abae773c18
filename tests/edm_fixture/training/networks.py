"""A tiny network and EDM preconditioning (arXiv 2206.00364 table 1), with EDM's import pattern."""

import numpy as np
import torch
from torch.nn.functional import silu

from torch_utils import persistence


@persistence.persistent_class
class FourierEmbedding(torch.nn.Module):
    def __init__(self, num_channels, scale=16):
        super().__init__()
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def forward(self, x):
        x = x.ger((2 * np.pi * self.freqs).to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


@persistence.persistent_class
class TinyUNet(torch.nn.Module):
    def __init__(self, img_resolution, in_channels, out_channels, label_dim=0, channels=8):
        super().__init__()
        self.emb = FourierEmbedding(channels)
        self.label = torch.nn.Linear(label_dim, channels) if label_dim else None
        self.layers = torch.nn.ModuleList([
            torch.nn.Conv2d(in_channels, channels, 3, padding=1),
            torch.nn.Conv2d(channels, out_channels, 3, padding=1),
        ])

    def forward(self, x, noise_labels, class_labels=None):
        emb = self.emb(noise_labels)
        if self.label is not None:
            emb = emb + self.label(class_labels)
        h = silu(self.layers[0](x) + emb[:, :, None, None])
        return self.layers[1](h)


@persistence.persistent_class
class EDMPrecond(torch.nn.Module):
    def __init__(self, img_resolution, img_channels, label_dim=0, sigma_min=0, sigma_max=float("inf"), sigma_data=0.5):
        super().__init__()
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.sigma_data = sigma_data
        self.model = TinyUNet(img_resolution, img_channels, img_channels, label_dim)

    def forward(self, x, sigma, class_labels=None, force_fp32=False):
        x = x.to(torch.float32)
        sigma = sigma.to(torch.float32).reshape(-1, 1, 1, 1)
        class_labels = None if self.label_dim == 0 else class_labels.to(torch.float32).reshape(-1, self.label_dim)
        c_skip = self.sigma_data ** 2 / (sigma ** 2 + self.sigma_data ** 2)
        c_out = sigma * self.sigma_data / (sigma ** 2 + self.sigma_data ** 2).sqrt()
        c_in = 1 / (self.sigma_data ** 2 + sigma ** 2).sqrt()
        c_noise = sigma.log() / 4
        F_x = self.model(c_in * x, c_noise.flatten(), class_labels=class_labels)
        return c_skip * x + c_out * F_x.to(torch.float32)
