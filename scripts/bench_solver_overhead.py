"""Each solver's own cost per network evaluation (zero-cost denoiser) beside one forward pass of a small U-Net.

Batch 256 of 3x32x32 in float32 on the CPU or CUDA (auto). The denoiser returns a fixed tensor, so the time
measured is the solver's tensor arithmetic and coefficient computation alone. Usage:
    python scripts/bench_solver_overhead.py [--steps 10] [--repeats 3] [--device auto]
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from diffsampler.schedules import get_sigmas
from diffsampler.solvers import SOLVERS

SHAPE = (256, 3, 32, 32)


class ZeroCostDenoiser:
    """D(x, sigma) = a fixed tensor: no arithmetic, so only the solver's own work is timed."""

    def __init__(self, like: torch.Tensor) -> None:
        self.out = torch.zeros_like(like)

    def __call__(self, x: torch.Tensor, sigma: float, cond: object = None) -> torch.Tensor:
        return self.out


class SmallUNet(nn.Module):
    """Two resolutions (32 and 16), 64 and 128 channels, one skip connection: a CIFAR-size U-Net in miniature."""

    def __init__(self, ch: int = 64) -> None:
        super().__init__()
        act = nn.SiLU()
        self.inp = nn.Conv2d(3, ch, 3, padding=1)
        self.enc = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), act, nn.Conv2d(ch, ch, 3, padding=1), act)
        self.down = nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1)
        self.mid = nn.Sequential(
            nn.Conv2d(2 * ch, 2 * ch, 3, padding=1), act, nn.Conv2d(2 * ch, 2 * ch, 3, padding=1), act
        )
        self.up = nn.ConvTranspose2d(2 * ch, ch, 4, stride=2, padding=1)
        self.dec = nn.Sequential(nn.Conv2d(2 * ch, ch, 3, padding=1), act, nn.Conv2d(ch, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.enc(self.inp(x))
        return self.dec(torch.cat([h, self.up(self.mid(self.down(h)))], dim=1))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_call(fn, device: torch.device, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        tic = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - tic)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    x = torch.randn(SHAPE, device=device)
    with torch.no_grad():
        net = SmallUNet().to(device).eval()
        unet = time_call(lambda: net(x), device, args.repeats)
        table = Table(
            title="solver overhead per NFE (zero-cost denoiser), batch "
            f"{SHAPE}, {device}; U-Net forward {unet * 1e3:.2f} ms"
        )
        for column in ("solver", "ms / NFE", "% of one U-Net forward"):
            table.add_column(column)
        denoiser = ZeroCostDenoiser(x)
        for name, spec in SOLVERS.items():
            if not spec.training_free:
                continue
            sigmas = get_sigmas(spec.default_schedule, args.steps, 0.002, 80.0)
            total = time_call(lambda spec=spec, sigmas=sigmas: spec.sample(denoiser, x, sigmas), device, args.repeats)
            per_eval = total / spec.nfe(args.steps)
            table.add_row(name, f"{per_eval * 1e3:.3f}", f"{100 * per_eval / unet:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
