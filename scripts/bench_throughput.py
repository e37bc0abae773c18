"""Throughput of our solvers against k-diffusion's samplers on a freshly built U-Net (the README's measurement);
the engine is ``diffsampler.bench.throughput`` and the command ``diffsampler throughput`` runs it on any model.

Usage:
    OMP_NUM_THREADS=1 python scripts/bench_throughput.py [--model PATH.pt] [--batch 64] [--nfe 10] [--repeats 3]
        [--precision float32|bf16] [--threads 1]
The default model is a freshly built 32-channel U-Net of the fmnist-cpu family (1x32x32, P = 1): random weights,
the cost of a trained one.
"""

from __future__ import annotations

import argparse

import torch

from diffsampler.bench.throughput import ThroughputSettings, compare_throughput
from diffsampler.models import load_model
from diffsampler.models.base import Denoiser
from diffsampler.models.unet import UNetConfig, UNetDenoiser


def build_model(path: str | None) -> Denoiser:
    """The checkpoint at ``path``, or a fresh 32-channel U-Net (random weights, same cost as a trained one)."""
    if path:
        return load_model(path)
    torch.manual_seed(0)
    cfg = UNetConfig(channels=32, channel_mult=[1, 2, 2], num_blocks=2, attention_resolutions=[8])
    return UNetDenoiser(cfg).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="own U-Net checkpoint (.pt); default a fresh 32-channel U-Net")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--nfe", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", choices=("float32", "bf16"), default="float32")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    precision = "bfloat16" if args.precision == "bf16" else "float32"
    settings = ThroughputSettings(args.batch, args.nfe, args.repeats, precision, args.threads)
    result = compare_throughput(build_model(args.model), settings)
    print(f"{'method':32s} {'CPU s':>8s} {'wall s':>8s} {'samples/s':>10s}")
    for m in result.methods:
        print(f"{m.name:32s} {m.cpu_seconds:8.3f} {m.wall_seconds:8.3f} {m.samples_per_second:10.1f}")
    for p in result.pairs:
        print(
            f"{p.ours}: throughput ratio to k-diffusion {p.ratio:.3f} (>1 = ours faster); overhead over the bare "
            f"network ours {100 * p.overhead_ours:+.2f}%, k-diffusion {100 * p.overhead_theirs:+.2f}%; max |ours - "
            f"theirs| {p.max_difference:.2e}; solver arithmetic alone: ours {100 * p.arithmetic_fraction_ours:.3f}%, "
            f"k-diffusion {100 * p.arithmetic_fraction_theirs:.3f}% of the bare network"
        )


if __name__ == "__main__":
    main()
