"""Peak memory of one `compute-ems` batch (two forward-mode JVPs) against one plain forward pass.

The network is a stand-in with the size and shape of a 32x32 diffusion U-Net (not a trained model): three
resolutions (32, 16, 8) with 128/256/256 channels, two residual blocks each, self-attention at 8x8, a sigma
embedding, and EDM preconditioning. Run one mode per process, since peak RSS is a high-water mark:

    python scripts/ems_memory.py jvp --batch 256
    python scripts/ems_memory.py forward --batch 256
    python scripts/ems_memory.py jvp --batch 16 --num-data 64   # same peak as K = 16
"""

from __future__ import annotations

import argparse
import math
import resource
import time

import torch
from rich.console import Console
from torch import nn

from diffsampler.ems.estimate import point_generator, point_record
from diffsampler.models.base import Denoiser


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(32, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(32, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x))) + self.emb(e)[:, :, None, None]
        return self.skip(x) + self.conv2(nn.functional.silu(self.norm2(h)))


class Attention(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm, self.qkv, self.out = nn.GroupNorm(32, c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        a = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)
        return x + self.out((v @ a.transpose(1, 2)).reshape(b, c, h, w))


class StandInUNet(Denoiser):
    """A U-Net-sized 32x32 denoiser with EDM preconditioning (c_skip, c_out, c_in, c_noise = log(sigma) / 4)."""

    sample_shape = (3, 32, 32)

    def __init__(self, widths: tuple[int, ...] = (128, 256, 256), emb: int = 512) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(64, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1)
        self.down, self.up, chans, c = nn.ModuleList(), nn.ModuleList(), [widths[0]], widths[0]
        for level, w in enumerate(widths):
            for _ in range(2):
                self.down.append(ResBlock(c, w, emb))
                c = w
                chans.append(c)
            if level < len(widths) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                chans.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, emb), Attention(c), ResBlock(c, c, emb)])
        for level, w in reversed(list(enumerate(widths))):
            for _ in range(3):
                self.up.append(ResBlock(c + chans.pop(), w, emb))
                c = w
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2))
        self.head = nn.Sequential(nn.GroupNorm(32, c), nn.SiLU(), nn.Conv2d(c, 3, 3, padding=1))
        self.sigma_data = 0.5

    def denoise(self, x, sigma, cond=None):
        s = sigma.to(x.dtype)[:, None, None, None]
        c_in = 1 / torch.sqrt(s**2 + self.sigma_data**2)
        c_skip = self.sigma_data**2 / (s**2 + self.sigma_data**2)
        c_out = s * self.sigma_data / torch.sqrt(s**2 + self.sigma_data**2)
        freqs = torch.exp(-math.log(1e4) * torch.arange(32, device=x.device, dtype=x.dtype) / 32)
        angle = (torch.log(sigma.to(x.dtype)) / 4)[:, None] * freqs[None]
        e = self.embed(torch.cat([torch.cos(angle), torch.sin(angle)], dim=1))
        h = self.stem(c_in * x)
        skips = [h]
        for block in self.down:
            h = block(h, e) if isinstance(block, ResBlock) else block(h)
            skips.append(h)
        for block in self.mid:
            h = block(h, e) if isinstance(block, ResBlock) else block(h)
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), e) if isinstance(block, ResBlock) else block(h)
        return c_skip * x + c_out * self.head(h)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("jvp", "forward"))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--num-data",
        type=int,
        default=None,
        help="data points K (default: one batch); peak memory must not grow with K",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    model = StandInUNet().eval()
    params = sum(p.numel() for p in model.parameters())
    data = torch.rand(args.num_data or args.batch, 3, 32, 32) * 2 - 1
    before = peak_mib()
    tic = time.perf_counter()
    if args.mode == "jvp":
        point_record(model, data, 1.0, point_generator(0, 0), args.batch, torch.device("cpu"))
    else:
        with torch.no_grad():
            model(data + torch.randn_like(data), 1.0)
    seconds = time.perf_counter() - tic
    Console().print(
        f"{args.mode}: {params / 1e6:.1f}M parameters, batch "
        f"{args.batch}, K {data.shape[0]}: peak RSS {peak_mib():.0f} MiB "
        f"(before {before:.0f} MiB), {seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
