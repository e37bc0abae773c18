"""How far bfloat16 Inception moves FID: the same sets scored with float32 and with bf16-autocast features.

    OMP_NUM_THREADS=2 python scripts/check_inception_bf16.py --ref fashion-mnist:train --ref-count 1000 \
        --set test=fashion-mnist:test --set p1=/work/samples/p1-500/samples.npz --count 500

Each set (first --count images) and the reference (first --ref-count images) pass through the Inception network
twice, in float32 (clean-fid's protocol) and under bfloat16 autocast; printed per set: FID both ways, their
relative difference, and the time of each pass (images/s, measured side by side in this run). `--precision
bfloat16` of `fid`, `ref-stats` and metric_options.fid is worth using where this difference is small beside the
differences a table compares.
"""

from __future__ import annotations

import time

import torch
import typer
from rich.console import Console

from diffsampler.data.datasets import load_images
from diffsampler.metrics.fid import Statistics, feature_statistics, fid_from_statistics
from diffsampler.metrics.inception import PRECISIONS, locate_inception


def _both(images, batch_size: int) -> tuple[dict[str, Statistics], dict[str, float]]:
    """Statistics and images/s of ``images`` in each precision."""
    weights, stats, rate = locate_inception(), {}, {}
    for precision in PRECISIONS:
        net = weights.at_precision(precision).load("cpu")
        start = time.perf_counter()
        stats[precision] = feature_statistics(net, images, batch_size)
        rate[precision] = len(images) / (time.perf_counter() - start)
    return stats, rate


def main(
    ref: str = typer.Option("fashion-mnist:train", help="Reference source (its first --ref-count images)."),
    ref_count: int = typer.Option(1000, help="Reference images."),
    sets: list[str] = typer.Option(..., "--set", help="NAME=SOURCE: a set to score (its first --count images)."),
    count: int = typer.Option(500, help="Images per set."),
    batch_size: int = typer.Option(32, help="Images per network call."),
) -> None:
    console = Console()
    reference, rate = _both(load_images(ref)[:ref_count], batch_size)
    console.print(f"reference {ref}[:{ref_count}]: " + ", ".join(f"{p} {r:.1f} img/s" for p, r in rate.items()))
    for item in sets:
        name, source = item.split("=", 1)
        stats, rate = _both(load_images(source)[:count], batch_size)
        fid = {p: fid_from_statistics(stats[p], reference[p]) for p in PRECISIONS}
        change = fid["bfloat16"] / fid["float32"] - 1
        console.print(
            f"{name}: FID float32 {fid['float32']:.3f}, bfloat16 {fid['bfloat16']:.3f} ({change:+.2%}); "
            + ", ".join(f"{p} {r:.1f} img/s" for p, r in rate.items()),
            highlight=False,
        )


if __name__ == "__main__":
    torch.set_num_threads(2)
    typer.run(main)
