"""CPU time per NFE of the fmnist-cpu U-Net family (P = 1, 2, 4) in float32 and bf16 autocast, NCHW and channels-last.

The shapes come from configs/train/fmnist-cpu-p{P}.yaml (32 channels, channel_mult [1, 2, 2], 2 blocks, attention
at 8; only the PDM patch size differs), built with fresh weights: the cost of a forward pass does not depend on
their values. One NFE is one call D(x, sigma) on a batch (default 256 images of 1x32x32) under torch.no_grad.
The input is an ordinary (NCHW) tensor in both layouts, as a solver passes it: channels-last weights make
the convolutions run channels-last. Every round times each (P, precision, layout) cell once, in turn, after one
warm-up call per cell; the figure is the median process CPU time over the rounds (with one thread it is the work
done, and stays meaningful on a shared CPU; wall time is printed beside it). Printed: seconds per NFE,
milliseconds per image and NFE, the cost of P = 2 and P = 4 relative to P = 1 in the same precision and layout,
the channels-last speed-up, and the largest difference between the two layouts' outputs.

Usage:
    OMP_NUM_THREADS=1 python scripts/bench_unet_cpu.py [--batch 256] [--repeats 2] [--threads 1]
        [--patches 1 2 4] [--precisions float32 bf16] [--layouts nchw channels_last]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from diffsampler.config import load_config
from diffsampler.models.unet import UNetDenoiser, count_parameters
from diffsampler.train.config import TrainConfig

CONFIG = "configs/train/fmnist-cpu-p{}.yaml"
SIGMA = 1.0
Cell = tuple[int, str, str]


def build(patch: int, layout: str) -> UNetDenoiser:
    """The family member of patch size ``patch`` (weights seeded), in the given memory layout."""
    torch.manual_seed(0)
    cfg = load_config(TrainConfig, CONFIG.format(patch), {})
    model = UNetDenoiser(cfg.unet_config(1, 32)).eval()
    return model.to(memory_format=torch.channels_last) if layout == "channels_last" else model


def forward(model: UNetDenoiser, x: torch.Tensor, precision: str) -> torch.Tensor:
    """One NFE, under bf16 autocast when asked."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        return model(x, SIGMA)


def run_cells(cells: list[Cell], batch: int, repeats: int) -> tuple[dict, dict, dict, dict]:
    """Per cell: CPU and wall seconds of each round, the warm-up output, and the model's parameter count."""
    models = {(p, layout): build(p, layout) for p, _, layout in cells}
    x = torch.randn(batch, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    outputs = {cell: forward(models[cell[0], cell[2]], x, cell[1]) for cell in cells}
    cpu: dict[Cell, list[float]] = {cell: [] for cell in cells}
    wall: dict[Cell, list[float]] = {cell: [] for cell in cells}
    for _ in range(repeats):
        for cell in cells:
            p, precision, layout = cell
            c, w = time.process_time(), time.perf_counter()
            forward(models[p, layout], x, precision)
            cpu[cell].append(time.process_time() - c)
            wall[cell].append(time.perf_counter() - w)
    params = {cell: count_parameters(models[cell[0], cell[2]]) for cell in cells}
    return cpu, wall, outputs, params


def report(cpu: dict, wall: dict, outputs: dict, params: dict, batch: int) -> None:
    med = {cell: statistics.median(v) for cell, v in cpu.items()}
    print(
        f"{'P':>2s} {'params':>9s} {'precision':>9s} {'layout':>13s} {'CPU s/NFE':>10s} {'wall s':>8s} "
        f"{'ms/img/NFE':>10s} {'vs P=1':>7s} {'CL speed-up':>11s}"
    )
    for cell in cpu:
        p, precision, layout = cell
        base = med.get((1, precision, layout))
        other = (p, precision, "nchw" if layout == "channels_last" else "channels_last")
        speedup = f"{med[other] / med[cell]:.3f}" if layout == "channels_last" and other in med else ""
        vs_p1 = f"{med[cell] / base:.3f}" if base else ""
        print(
            f"{p:2d} {params[cell]:9,d} {precision:>9s} {layout:>13s} {med[cell]:10.3f} "
            f"{statistics.median(wall[cell]):8.3f} {1e3 * med[cell] / batch:10.3f} {vs_p1:>7s} {speedup:>11s}"
        )
    for (p, precision, layout), out in outputs.items():
        other = outputs.get((p, precision, "nchw"))
        if layout == "channels_last" and other is not None:
            print(f"P={p} {precision}: max |channels_last - nchw| = {(out - other).abs().max().item():.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--patches", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--precisions", nargs="+", choices=("float32", "bf16"), default=["float32", "bf16"])
    parser.add_argument("--layouts", nargs="+", choices=("nchw", "channels_last"), default=["nchw", "channels_last"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cells = [(p, pr, lay) for pr in args.precisions for p in args.patches for lay in args.layouts]
    print(
        f"batch {args.batch}, {args.threads} thread(s), {args.repeats} rounds, sigma {SIGMA}, torch {torch.__version__}"
    )
    report(*run_cells(cells, args.batch, args.repeats), args.batch)


if __name__ == "__main__":
    main()
