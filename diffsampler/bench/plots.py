"""<metric>_vs_nfe.png and <metric>_vs_time.png: one line per solver, log scale where the values span more than a
decade."""

from __future__ import annotations

from pathlib import Path

from diffsampler.atomic import atomic_file
from diffsampler.bench.table import Entry, MetricTable

Line = tuple[str, list[tuple[float, float]]]


def _points(xs: list[float | None], row: list[Entry]) -> list[tuple[float, float]]:
    return [(x, e.value) for x, e in zip(xs, row) if x is not None and e.has_value and e.value is not None]


def _plot(table: MetricTable, lines: list[Line], xlabel: str, path: Path, xticks: list[int] | None) -> None:
    """One line per solver (log x axis unless ``xticks`` are given; log y where the values span over a decade)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    values: list[float] = []
    for i, (label, points) in enumerate(lines):
        if points:
            xs, ys = zip(*points)
            # the colour cycle has 10 colours: later rows are dashed with square markers, so no two rows look alike
            first_cycle = i < 10
            ax.plot(xs, ys, label=label, linestyle="-" if first_cycle else "--", marker="o" if first_cycle else "s")
            values += ys
    positive = [v for v in values if v > 0]
    if positive and len(positive) == len(values) and max(positive) > 10 * min(positive):
        ax.set_yscale("log")
    if xticks is None:
        ax.set_xscale("log")
    else:
        ax.set_xticks(xticks)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(table.name)
    ax.set_title(table.summary, fontsize=9)
    ax.grid(True, alpha=0.3)
    if values:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def plot_metric(table: MetricTable, budgets: list[int], path: Path) -> None:
    """Plot a metric against NFE for every solver with at least one value."""
    lines = [(label, _points([float(n) for n in budgets], row)) for label, row in table.rows]
    _plot(table, lines, "NFE", path, budgets)


def plot_metric_vs_time(table: MetricTable, throughput: MetricTable, path: Path) -> None:
    """Plot a metric against each cell's sampling time per sample (ms: 1000 / its samples/s), log scale."""
    speeds = dict(throughput.rows)
    lines = []
    for label, row in table.rows:
        times = [1000.0 / e.value if e.has_value and e.value else None for e in speeds.get(label, [])]
        lines.append((label, _points(times, row)))
    _plot(table, lines, "sampling time per sample (ms, log scale)", path, None)
