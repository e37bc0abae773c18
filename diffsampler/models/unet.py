"""A compact U-Net denoiser with EDM preconditioning and optional PDM patching.

Preconditioning (EDM, arXiv 2206.00364 Table 1): D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)
with c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2),
c_in = 1 / sqrt(sigma^2 + sd^2) and c_noise = ln(sigma) / 4, sd = sigma_data.
The network F is a DDPM-style U-Net (residual blocks with scale-shift noise conditioning, self-attention
at chosen feature resolutions, strided-conv down / nearest+conv up sampling, skip connections).
With ``patch_size`` P > 1 (PDM, arXiv 2207.04316) F sees the image as (C P^2, H/P, W/P) patches
(see ``patching``) and its output is rearranged back, so every level runs at 1/P^2 of the area.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffsampler.errors import UserError
from diffsampler.models.base import Denoiser
from diffsampler.models.patching import patchify, unpatchify


@dataclass
class UNetConfig:
    """Shape of the U-Net: image size, width, depth, attention, patching and the EDM data scale.

    ``attention_resolutions`` are resolutions of the network's own feature maps (after patching);
    the bottleneck always has attention.
    """

    image_channels: int = 1
    image_size: int = 32
    channels: int = 64
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])
    num_blocks: int = 2
    attention_resolutions: list[int] = field(default_factory=lambda: [8])
    head_channels: int = 32
    dropout: float = 0.0
    patch_size: int = 1
    sigma_data: float = 0.5
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    noise_embedding_scale: float = 1.0
    """Multiplier of c_noise inside the sinusoidal embedding. 1 keeps the embedding smooth in sigma, as EDM's
    positional embedding of c_noise = ln(sigma)/4 (arXiv 2206.00364). Checkpoints of version 1 used 1000 (DDPM's
    integer-timestep scale): their highest feature turns 250 radians per unit of ln(sigma), so D(x, sigma) of an
    undertrained network wiggles in sigma and no ODE solver converges on it."""

    def validate(self) -> None:
        if self.image_channels < 1 or self.channels < 1 or self.num_blocks < 0 or self.head_channels < 1:
            raise UserError("image_channels, channels and head_channels must be positive and num_blocks non-negative")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise UserError(f"channel_mult must be a non-empty list of positive integers, got {self.channel_mult}")
        if self.patch_size < 1:
            raise UserError(f"patch_size must be at least 1, got {self.patch_size}")
        factor = self.patch_size * 2 ** (len(self.channel_mult) - 1)
        if self.image_size % factor:
            raise UserError(
                f"image_size {self.image_size} must be divisible by patch_size * 2^(levels - 1) = {factor}; "
                "change patch_size or channel_mult"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.sigma_data <= 0 or not 0 < self.sigma_min < self.sigma_max:
            raise UserError("sigma_data must be positive and 0 < sigma_min < sigma_max")
        if not 0 < self.noise_embedding_scale < math.inf:
            raise UserError(f"noise_embedding_scale must be positive and finite, got {self.noise_embedding_scale}")

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return (self.image_channels, self.image_size, self.image_size)


def _groups(channels: int) -> int:
    """GroupNorm groups: about four channels per group, at most 32, dividing ``channels``."""
    g = max(1, min(32, channels // 4))
    while channels % g:
        g -= 1
    return g


SMALL_MAP_PIXELS = 256
"""Feature maps of at most this many pixels (16x16) get their GroupNorm in float32 under low-precision autocast."""


class GroupNorm32(nn.GroupNorm):
    """GroupNorm that computes small low-precision feature maps in float32 (and returns float32 for them).

    Under bf16 autocast the convolutions return bf16, and PyTorch's CPU kernel for bf16 channels-last GroupNorm
    ran 4-6x slower than its float32 kernel on maps of 16x16 and 8x8 (measured on a 2-core Xeon with AMX), while
    on 32x32 maps it was as fast as float32 and cheaper downstream. So maps of at most ``SMALL_MAP_PIXELS`` go
    through float32, larger ones stay in the input's dtype; float32 and float64 inputs are plain GroupNorm. (CUDA's
    autocast already runs GroupNorm in float32.) Same parameters and state dict as ``nn.GroupNorm``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = x.dtype in (torch.bfloat16, torch.float16)
        dtype = torch.float32 if low and x.shape[-1] * x.shape[-2] <= SMALL_MAP_PIXELS else x.dtype
        return F.group_norm(x.to(dtype), self.num_groups, self.weight.to(dtype), self.bias.to(dtype), self.eps)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def noise_embedding(c_noise: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    """Sinusoidal embedding [cos(a c w_k), sin(a c w_k)], w_k = 10000^(-k / (dim/2)), a = ``scale``
    (DDPM, arXiv 2006.11239)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=c_noise.device, dtype=torch.float32) / half)
    args = scale * c_noise.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the noise embedding as scale and shift after the second norm,
    optional self-attention after; residual sums scaled by 1/sqrt(2)."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float, attention: bool, head_channels: int) -> None:
        super().__init__()
        self.norm1 = GroupNorm32(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = GroupNorm32(_groups(cout), cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.attention = Attention(cout, head_channels) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        x = (self.skip(x) + h) * (1 / math.sqrt(2))
        return x if self.attention is None else self.attention(x)


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, residual, zero-initialised output."""

    def __init__(self, channels: int, head_channels: int) -> None:
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = GroupNorm32(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)
        return (x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))) * (1 / math.sqrt(2))


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """F(x, c_noise): (B, C, H, W) image-space input and output; internally on PDM patches.

    After each call ``bottleneck`` holds the spatial mean of the bottleneck feature map, (B, F) with
    F = channels * channel_mult[-1].
    """

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        ch, p = cfg.channels, cfg.patch_size
        emb_dim = 4 * ch
        self.emb = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(cfg.image_channels * p * p, ch, 3, padding=1)
        attn = set(cfg.attention_resolutions)
        res = cfg.image_size // p
        widths = [ch]
        self.down = nn.ModuleList()
        cur = ch
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_blocks):
                self.down.append(ResBlock(cur, ch * mult, emb_dim, cfg.dropout, res in attn, cfg.head_channels))
                cur = ch * mult
                widths.append(cur)
            if level < len(cfg.channel_mult) - 1:
                self.down.append(Downsample(cur))
                widths.append(cur)
                res //= 2
        self.mid = nn.ModuleList(
            [
                ResBlock(cur, cur, emb_dim, cfg.dropout, True, cfg.head_channels),
                ResBlock(cur, cur, emb_dim, cfg.dropout, False, cfg.head_channels),
            ]
        )
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for _ in range(cfg.num_blocks + 1):
                self.up.append(
                    ResBlock(cur + widths.pop(), ch * mult, emb_dim, cfg.dropout, res in attn, cfg.head_channels)
                )
                cur = ch * mult
            if level > 0:
                self.up.append(Upsample(cur))
                res *= 2
        self.norm_out = GroupNorm32(_groups(cur), cur)
        self.conv_out = _zero(nn.Conv2d(cur, cfg.image_channels * p * p, 3, padding=1))
        self.bottleneck: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        emb = F.silu(self.emb(noise_embedding(c_noise, self.cfg.channels, self.cfg.noise_embedding_scale).to(x.dtype)))
        h = self.conv_in(patchify(x, self.cfg.patch_size))
        skips = [h]
        for block in self.down:
            h = block(h, emb)
            skips.append(h)
        for block in self.mid:
            h = block(h, emb)
        self.bottleneck = h.detach().float().mean(dim=(2, 3))
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), emb) if isinstance(block, ResBlock) else block(h, emb)
        return unpatchify(self.conv_out(F.silu(self.norm_out(h))), self.cfg.patch_size)


def edm_coefficients(
    sigma: torch.Tensor, sigma_data: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in, c_noise) of EDM Table 1 for sigma of shape (B,), in sigma's dtype."""
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), 1 / total.sqrt(), sigma.log() / 4


def checkpoint_summary(meta: dict[str, Any] | None) -> dict[str, Any]:
    """{"checkpoint": what identifies the training of a loaded checkpoint}, or {} for a freshly built model."""
    if meta is None:
        return {}
    keys = ("step", "images_seen", "data_sha256", "weights_sha256")
    return {"checkpoint": {k: meta[k] for k in keys if k in meta}}


class UNetWrapper:
    """What the EDM and the flow U-Net denoisers share: autocast, the bottleneck feature, the description."""

    config: UNetConfig
    checkpoint_meta: dict[str, Any] | None = None
    """The training metadata of the checkpoint this model was loaded from (None if built fresh)."""
    supports_autocast = True
    autocast_dtype: torch.dtype | None
    last_features: torch.Tensor | None

    def set_autocast(self, dtype: torch.dtype | None) -> None:
        self.autocast_dtype = dtype

    def features(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """The pooled bottleneck feature (B, F) at (x, sigma); one network evaluation (counted)."""
        self(x, sigma)
        assert self.last_features is not None
        return self.last_features

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "unet": asdict(self.config), **checkpoint_summary(self.checkpoint_meta)}


class UNetDenoiser(UNetWrapper, Denoiser):
    """The EDM-preconditioned U-Net as a denoiser D(x, sigma); runs the network in its parameters' dtype, or
    under autocast to ``autocast_dtype`` (``set_autocast``; or the caller's autocast), and returns x's dtype.
    ``last_features`` is the pooled bottleneck."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.config = cfg
        self.net = UNet(cfg)
        self.sigma_min = cfg.sigma_min
        self.sigma_max = cfg.sigma_max
        self.sample_shape = cfg.sample_shape

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        c_skip, c_out, c_in, c_noise = (
            c.to(x.dtype) for c in edm_coefficients(sigma.to(torch.float64), self.config.sigma_data)
        )
        dtype = self.net.conv_in.weight.dtype
        cast = self.autocast_dtype
        # nullcontext, not enabled=False: a disabled autocast would switch off the caller's (training's)
        with contextlib.nullcontext() if cast is None else torch.autocast(x.device.type, dtype=cast):
            out = self.net((c_in[:, None, None, None] * x).to(dtype), c_noise.to(dtype))
        self.last_features = self.net.bottleneck if cast is None else self.net.bottleneck.to(dtype)
        return c_skip[:, None, None, None] * x + c_out[:, None, None, None] * out.to(x.dtype)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
