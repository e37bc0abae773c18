"""fd_fmnist against CPU time per image for the P = 1, 2, 4 U-Nets and the PDM two-network scheme.

Where does patching win? Each benchmark cell (solver, NFE) of the four runs becomes a point at
x = CPU milliseconds per image, y = fd_fmnist. The cost of one NFE of each model is measured here, side by side in
one process on one thread (``--precision``: float32, or bf16 autocast as benchmarks with precision auto run the
U-Net on a CPU with AMX; batch ``--batch``, the median of ``--repeats`` rounds); a cell's cost is NFE times that.
Only the (solver, NFE) cells of the P = 2 run are plotted for every model, so a larger P = 1 table (more rows and
budgets) is compared on the same subset. For the two-network scheme (PDM, arXiv 2207.04316: P = 4 above
switch_sigma, P = 1 below) each cell's network calls are counted per side by running its solver on its recorded sigma
grid (sigmas.csv) with a counting stand-in for the network: cost = calls above the switch x P = 4 cost + calls below
x P = 1 cost.
Writes the figure and a CSV of the points.

Usage:
    OMP_NUM_THREADS=1 python scripts/plot_patched.py --p1 results/fmnist-p1-full --p2 results/fmnist-p2-subset \
        --p4 results/fmnist-p4-subset --pdm results/fmnist-pdm-subset --out results/fmnist-patched --precision bf16
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter  # noqa: E402

from diffsampler.models import load_model  # noqa: E402
from diffsampler.solvers import get_solver  # noqa: E402

METRIC = "fd_fmnist"
PDM_SPEC = "configs/models/fmnist-cpu-pdm.yaml"
PDM = yaml.safe_load(Path(PDM_SPEC).read_text())
MODELS = {"p1": "fmnist-p1", "p2": "fmnist-p2", "p4": PDM["high"]}
"""The networks measured: the built-in P = 1 and P = 2, and the unshipped P = 4 the two-network spec names."""


def ms_per_image_nfe(name: str, batch: int, repeats: int, precision: str) -> float:
    """Median CPU milliseconds per image and NFE of model ``name`` (a built-in name or checkpoint path; one thread)."""
    model = load_model(name)
    model.set_autocast(torch.bfloat16 if precision == "bf16" else None)
    x = torch.randn(batch, *model.sample_shape, generator=torch.Generator().manual_seed(0))
    times = []
    with torch.no_grad():
        model(x, 1.0)
        for _ in range(repeats):
            tic = time.process_time()
            model(x, 1.0)
            times.append(time.process_time() - tic)
    return 1000 * statistics.median(times) / batch


def fd_cells(folder: Path) -> dict[tuple[str, int], float]:
    """(label, NFE) -> fd_fmnist of the finished cells of one benchmark run."""
    table = {}
    for row in csv.DictReader((folder / "table.csv").open()):
        if row["metric"] != METRIC:
            continue
        for key, value in row.items():
            if key.startswith("nfe_") and value not in ("", "n/a", "failed"):
                table[row["solver"], int(key[4:])] = float(value)
    return table


class SideCounter:
    """Stands in for a network: returns zeros and counts the calls above and below ``switch``."""

    def __init__(self, switch: float) -> None:
        self.switch, self.high, self.low = switch, 0, 0

    def __call__(self, x: torch.Tensor, sigma: object, cond: object = None) -> torch.Tensor:
        s = float(torch.as_tensor(sigma).reshape(-1)[0])
        self.high += s > self.switch
        self.low += s <= self.switch
        return torch.zeros_like(x)


def pdm_calls(folder: Path, switch: float) -> dict[tuple[str, int], tuple[int, int]]:
    """(label, NFE) -> (calls above the switch, calls below) of each cell of the two-network run (each label's
    solver and options from the run's own run.json)."""
    entries, calls = json.loads((folder / "run.json").read_text())["solvers"], {}
    for row in csv.DictReader((folder / "sigmas.csv").open()):
        entry = entries[row["solver"]]
        spec = get_solver(entry["solver"])
        given = {**entry["options"], **({"afs": row["afs"] == "True"} if "afs" in spec.options else {})}
        options = spec.resolve_options(given)
        sigmas = torch.tensor([float(s) for s in row["sigmas"].split()], dtype=torch.float64)
        counter = SideCounter(switch)
        spec.sample(counter, torch.zeros(1, 1, dtype=torch.float64), sigmas, options)
        calls[row["solver"], int(row["nfe"])] = (counter.high, counter.low)
    return calls


def points(args: argparse.Namespace, cost: dict[str, float]) -> list[dict]:
    """One row per finished cell of the four runs (those of the P = 2 run's cells): model, label, NFE, CPU ms per
    image, fd_fmnist."""
    cells = {model: fd_cells(Path(getattr(args, model))) for model in ("p1", "p2", "p4")}
    rows = []
    for model, table in cells.items():
        for (label, nfe), fd in table.items():
            if (label, nfe) in cells["p2"]:
                rows.append(dict(model=f"fmnist-{model}", label=label, nfe=nfe, ms=nfe * cost[model], fd=fd))
    switch = float(PDM["switch_sigma"])
    calls = pdm_calls(Path(args.pdm), switch)
    for (label, nfe), fd in fd_cells(Path(args.pdm)).items():
        high, low = calls[label, nfe]
        rows.append(dict(model="pdm p4/p1", label=label, nfe=nfe, ms=high * cost["p4"] + low * cost["p1"], fd=fd))
    return rows


def plot(rows: list[dict], path: Path, precision: str) -> None:
    """All cells faint, and per model the lower envelope (the best fd_fmnist reachable at each cost)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = sorted((r for r in rows if r["model"] == model), key=lambda r: r["ms"])
        line = ax.scatter([r["ms"] for r in mine], [r["fd"] for r in mine], s=12, alpha=0.35)
        best, front = float("inf"), []
        for r in mine:
            if r["fd"] < best:
                best = r["fd"]
                front.append(r)
        ax.plot([r["ms"] for r in front], [r["fd"] for r in front], "-o", color=line.get_facecolor()[0], label=model)
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):  # plain numbers at 1, 2, 5 per decade (the default minor labels overlapped)
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(StrMethodFormatter("{x:g}"))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"CPU milliseconds per image (1 thread, {precision})")
    ax.set_ylabel(METRIC)
    ax.set_title("Patched models: fd_fmnist against sampling cost (every solver x NFE cell)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for model in ("p1", "p2", "p4", "pdm"):
        parser.add_argument(f"--{model}", required=True, help=f"benchmark run folder of {model}")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", choices=("float32", "bf16"), default="float32")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cost = {m: ms_per_image_nfe(name, args.batch, args.repeats, args.precision) for m, name in MODELS.items()}
    print("CPU ms per image and NFE: " + ", ".join(f"{m} {c:.2f}" for m, c in cost.items()))
    rows = points(args, cost)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "fd_vs_cpu_time.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["model", "label", "nfe", "ms", "fd"])
        writer.writeheader()
        writer.writerows(rows)
    (out / "cost_per_nfe.json").write_text(json.dumps({f"fmnist-{m}": c for m, c in cost.items()}, indent=1) + "\n")
    plot(rows, out / "fd_vs_cpu_time.png", args.precision)


if __name__ == "__main__":
    main()
