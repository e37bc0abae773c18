"""Throughput of FID feature extraction for 32x32 samples: batched matrix resize + Inception vs clean-fid's PIL path.

    PYTHONPATH=$PWD python scripts/bench_fid.py --device cuda --num-images 4096 --batch-size 256
    PYTHONPATH=$PWD python scripts/bench_fid.py --device cpu --num-images 32 --batch-size 16 --repeats 1

Reports images/s for: the resize alone (ours on the device, clean-fid's PIL resize on one CPU core),
the Inception network alone, and the whole feature extraction both ways (clean-fid's way = PIL
resize on one core, then the same network). Writes a JSON file with --json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table

from diffsampler.device import resolve_device
from diffsampler.metrics.fid import image_batches
from diffsampler.metrics.inception import INPUT_SIZE, locate_inception


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn: Callable[[], object], count: int, device: torch.device, repeats: int) -> float:
    """Best images/s over ``repeats`` timed runs of ``fn`` (after one warm-up run)."""
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return count / best


def main(
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    num_images: int = typer.Option(64, help="Images per timed run (use thousands on a GPU)."),
    batch_size: int = typer.Option(32, help="Images per Inception call."),
    channels: int = typer.Option(3, help="1 (grayscale, repeated to RGB) or 3."),
    repeats: int = typer.Option(2, help="Timed runs per measurement; the best is reported."),
    inception: Optional[Path] = typer.Option(None, help="FID Inception weights; default lookup otherwise."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the figures to this JSON file."),
) -> None:
    from cleanfid.resize import build_resizer

    dev = resolve_device(device)
    torch.backends.cudnn.benchmark = True
    net = locate_inception(inception).load(dev)
    images = np.random.default_rng(0).integers(0, 256, (num_images, 32, 32, channels)).astype(np.uint8)
    batches = [b.to(dev) for b in image_batches(images, batch_size)]
    pil_resize = build_resizer("clean")
    rgb = images if channels == 3 else np.repeat(images, 3, axis=-1)
    net_input = torch.zeros(batch_size, 3, *INPUT_SIZE, device=dev)

    def our_resize() -> None:
        for b in batches:
            net.preprocess(b)

    def pil_only() -> list[np.ndarray]:
        return [pil_resize(img) for img in rgb]

    def network_only() -> None:
        with torch.no_grad():
            for _ in batches:
                net.trunk(net_input)

    def ours_full() -> None:
        for b in batches:
            net(b)

    def cleanfid_full() -> None:
        resized = np.stack(pil_only()).transpose(0, 3, 1, 2)
        with torch.no_grad():
            for start in range(0, len(resized), batch_size):
                x = torch.from_numpy(resized[start : start + batch_size]).to(dev)
                net.trunk((x - 128) / 128)

    figures = {
        "device": str(torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"),
        "torch_threads": torch.get_num_threads(),
        "num_images": num_images,
        "batch_size": batch_size,
        "channels": channels,
        "resize_ours_images_per_s": _rate(our_resize, num_images, dev, repeats),
        "resize_pil_one_core_images_per_s": _rate(pil_only, num_images, torch.device("cpu"), repeats),
        "network_only_images_per_s": _rate(network_only, len(batches) * batch_size, dev, repeats),
        "features_ours_images_per_s": _rate(ours_full, num_images, dev, repeats),
        "features_cleanfid_way_images_per_s": _rate(cleanfid_full, num_images, dev, repeats),
    }
    table = Table(title=f"FID feature extraction, 32x32 -> 299x299, {figures['device']}")
    table.add_column("measurement")
    table.add_column("images/s", justify="right")
    for key, value in figures.items():
        if key.endswith("_per_s"):
            table.add_row(key.removesuffix("_images_per_s"), f"{value:,.1f}")
    Console().print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    typer.run(main)
