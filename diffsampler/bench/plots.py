"""<metric>_vs_nfe.png: one line per solver, log scale where the values span more than a decade."""

from __future__ import annotations

from pathlib import Path

from diffsampler.atomic import atomic_file
from diffsampler.bench.table import MetricTable


def plot_metric(table: MetricTable, budgets: list[int], path: Path) -> None:
    """Plot a metric against NFE for every solver with at least one value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    values: list[float] = []
    for label, row in table.rows:
        points = [(nfe, e.value) for nfe, e in zip(budgets, row) if e.has_value]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", label=label)
            values += ys
    positive = [v for v in values if v > 0]
    if positive and len(positive) == len(values) and max(positive) > 10 * min(positive):
        ax.set_yscale("log")
    ax.set_xlabel("NFE")
    ax.set_ylabel(table.name)
    ax.set_xticks(budgets)
    ax.set_title(table.summary, fontsize=9)
    ax.grid(True, alpha=0.3)
    if values:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
