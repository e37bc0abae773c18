"""Loss curves of training runs side by side: EDM loss against CPU time and against images seen.

    python scripts/plot_training.py results/models/loss.png RUN_FOLDER [RUN_FOLDER ...]

Reads each RUN_FOLDER/loss.csv (written by `diffsampler train-model`) and draws the logged window means,
smoothed by a running mean over 10 rows, one line per run labelled by the folder name.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def read_log(run: Path) -> dict[str, np.ndarray]:
    with (run / "loss.csv").open() as f:
        rows = list(csv.DictReader(f))
    return {key: np.array([float(r[key]) for r in rows]) for key in ("images_seen", "loss", "cpu_seconds")}


def smooth(values: np.ndarray, width: int = 10) -> np.ndarray:
    if len(values) < width:
        return values
    kernel = np.ones(width) / width
    return np.convolve(np.pad(values, (width - 1, 0), mode="edge"), kernel, mode="valid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    fig, (by_time, by_images) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for run in args.runs:
        log = read_log(run)
        loss = smooth(log["loss"])
        by_time.plot(log["cpu_seconds"] / 3600, loss, label=run.name)
        by_images.plot(log["images_seen"], loss, label=run.name)
    by_time.set_xlabel("CPU hours (training steps)")
    by_images.set_xlabel("images seen")
    by_images.set_xscale("log")
    by_time.set_ylabel("EDM loss (running mean of 10 logged windows)")
    by_time.set_yscale("log")
    by_time.legend()
    for ax in (by_time, by_images):
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
