"""The three U-Nets' (P = 1, 2 built in, P = 4 by path) cost per image and NFE with torch's GroupNorm and GroupNorm32.

    python scripts/bench_groupnorm.py [--threads 2] [--batches 64,256] [--rounds 3]

For each model and batch: the network under bf16 autocast with torch's GroupNorm kernel on the input's dtype, under
bf16 autocast with GroupNorm32 (small maps in float32, see diffsampler/models/unet.py), and in float32; each the best
of --rounds rounds of 3 forward passes after a warm-up, the variants interleaved within each round.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from diffsampler.models import load_model
from diffsampler.models.unet import GroupNorm32

OURS = GroupNorm32.forward
P4_CHECKPOINT = "results/models/fmnist-p4.pt"
"""The P = 4 U-Net, not shipped in the package (FID above 50), loaded by path from the repository root."""
VARIANTS = {"bf16, torch's GroupNorm": (True, nn.GroupNorm.forward), "bf16, GroupNorm32": (True, OURS)}
VARIANTS["float32"] = (False, OURS)


def ms_per_image(net: nn.Module, batch: int, bf16: bool, calls: int = 3) -> float:
    x = torch.randn(batch, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    c_noise = torch.linspace(-2, 2, batch)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        net(x, c_noise)
        start = time.perf_counter()
        for _ in range(calls):
            net(x, c_noise)
    return (time.perf_counter() - start) / calls / batch * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[64, 256])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| model | batch | " + " | ".join(VARIANTS) + " |")
    for model in ("fmnist-p1", "fmnist-p2", P4_CHECKPOINT):
        net = load_model(model).net
        for batch in args.batches:
            best = dict.fromkeys(VARIANTS, float("inf"))
            for _ in range(args.rounds):
                for name, (bf16, forward) in VARIANTS.items():
                    GroupNorm32.forward = forward
                    best[name] = min(best[name], ms_per_image(net, batch, bf16))
            GroupNorm32.forward = OURS
            print(f"| {model} | {batch} | " + " | ".join(f"{best[n]:.2f}" for n in VARIANTS) + " |", flush=True)


if __name__ == "__main__":
    main()
