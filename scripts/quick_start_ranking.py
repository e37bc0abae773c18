"""How far the quick start's ranking agrees with the reference table: Spearman's rank correlation of one column.

A cell is matched to the reference cell of the same solver, options and schedule at the same NFE (labels differ:
the quick start names a solver by itself, the table by its own labels); the matched cells are ranked by the metric
in each run and Spearman's rho = 1 - 6 sum d_i^2 / (n (n^2 - 1)) is computed on the ranks (ties get their mean
rank, and then rho is Pearson's correlation of the ranks). Issue 36 asks for rho >= 0.9 at NFE 5 on fd_fmnist
against results/fmnist-p1-full (5,000 samples per cell).

Usage:
    python scripts/quick_start_ranking.py results/fmnist-p1 [--reference results/fmnist-p1-full] [--nfe 5]
        [--metric fd_fmnist]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def _key(cell: dict[str, Any]) -> str:
    return json.dumps([cell["solver"], cell["options"], cell["schedule"]], sort_keys=True)


def column(folder: Path, nfe: int, metric: str) -> dict[str, tuple[str, float]]:
    """(solver, options, schedule) key -> (label, value) of the finished cells of one NFE in a run's results.json."""
    cells = json.loads((folder / "results.json").read_text())["cells"]
    return {
        _key(c): (c["label"], float(c["values"][metric]))
        for c in cells
        if c["nfe"] == nfe and c.get("values", {}).get(metric) is not None
    }


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their mean rank."""
    order = values.argsort(kind="stable")
    out = np.empty(len(values))
    out[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        out[tied] = out[tied].mean()
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho: Pearson's correlation of the ranks."""
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the quick start's run folder (with results.json)")
    parser.add_argument("--reference", type=Path, default=Path("results/fmnist-p1-full"))
    parser.add_argument("--nfe", type=int, default=5)
    parser.add_argument("--metric", default="fd_fmnist")
    args = parser.parse_args()
    mine, ref = column(args.run, args.nfe, args.metric), column(args.reference, args.nfe, args.metric)
    keys = [k for k in mine if k in ref]
    if len(keys) < 3:
        raise SystemExit(f"only {len(keys)} cells of NFE {args.nfe} match between the runs; need at least 3")
    a, b = np.array([mine[k][1] for k in keys]), np.array([ref[k][1] for k in keys])
    ra, rb = ranks(a), ranks(b)
    print(f"{'solver':22s} {'run':>10s} rank {'reference':>10s} rank")
    for i in np.argsort(rb):
        print(f"{mine[keys[i]][0]:22s} {a[i]:10.4g} {ra[i]:4g} {b[i]:10.4g} {rb[i]:4g}")
    unmatched = [mine[k][0] for k in mine if k not in ref]
    extra = f"; not in the reference: {', '.join(unmatched)}" if unmatched else ""
    print(f"Spearman rho = {spearman(a, b):.3f} over {len(keys)} solvers at NFE {args.nfe} ({args.metric}){extra}")


if __name__ == "__main__":
    main()
