"""<metric>_vs_nfe.png and <metric>_vs_time.png: one panel per solver group (fixed solvers, learned schedules,
learned solvers), one colour per solver in every plot, the converged value as a dashed line where the run names
one, and an interval band around a line whose entries carry ``low`` / ``high``; log scales where the values span
more than a decade."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffsampler.atomic import atomic_file
from diffsampler.bench.config import LEARNED_SCHEDULES, SolverEntry
from diffsampler.bench.table import Entry, MetricTable

GROUPS = ("fixed solvers", "learned schedules", "learned solvers")
"""The panels, in order: training-free solvers on fixed schedules, on searched or learned schedules (a schedule
file, gits or ld3), and solvers that need a trained artefact (an AMED predictor, DPM-Solver-v3 statistics:
``SolverSpec.requires``)."""
LINE_STYLES = ("-", "--", ":", "-.")
"""Rows of the same solver in one panel (same colour) differ by line style."""


@dataclass(frozen=True)
class RowStyle:
    """How one table row is drawn: its solver (which picks the colour) and its panel."""

    solver: str
    group: str


def row_group(entry: SolverEntry) -> str:
    """The panel of a row: learned schedules for a schedule file or a searched schedule, learned solvers for a
    solver that requires an artefact, else fixed solvers."""
    from diffsampler.schedule_file import is_schedule_path
    from diffsampler.solvers import get_solver

    if entry.schedule is not None and (is_schedule_path(entry.schedule) or entry.schedule in LEARNED_SCHEDULES):
        return GROUPS[1]
    return GROUPS[2] if get_solver(entry.solver).requires else GROUPS[0]


@dataclass(frozen=True)
class Point:
    """One plotted cell: x, the value and its interval (None where the record carries none)."""

    x: float
    y: float
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class PlotSettings:
    """What every plot of a run shares: the row styles and the converged value of each metric."""

    rows: dict[str, RowStyle]
    converged: dict[str, float]
    converged_label: str = "converged"


def solver_colour(solver: str) -> Any:
    """The solver's colour, the same in every plot: a fixed palette taken in the order of the solver registry
    (tab10 without its grey, five dark shades of tab20b, then tab20's light shades; plugins' solvers come after
    the built-in ones)."""
    from matplotlib import colormaps

    from diffsampler.solvers import SOLVERS

    strong = [colormaps["tab10"](i) for i in range(10) if i != 7] + [colormaps["tab20b"](i) for i in (0, 8, 12, 16, 4)]
    light = [colormaps["tab20"](i) for i in range(1, 20, 2) if i != 15]
    palette = strong + light  # tab10's grey is left to the converged line
    return palette[list(SOLVERS).index(solver) % len(palette)]


def _points(xs: list[float | None], row: list[Entry]) -> list[Point]:
    return [
        Point(x, e.value, e.low, e.high)
        for x, e in zip(xs, row)
        if x is not None and e.has_value and e.value is not None
    ]


def _two_and_five(value: float, _: Any) -> str:
    """Minor tick labels of a log axis at 2 and 5 times a power of ten only (the others would overlap)."""
    if value <= 0:
        return ""
    mantissa = value / 10 ** math.floor(math.log10(value))
    return f"{value:g}" if round(mantissa, 6) in (2.0, 5.0) else ""


def _log_scale(values: list[float]) -> bool:
    positive = [v for v in values if v > 0]
    return bool(positive) and len(positive) == len(values) and max(positive) > 10 * min(positive)


def _draw_panel(ax: Any, lines: list[tuple[str, RowStyle, list[Point]]], converged: float | None, label: str) -> None:
    """The rows of one group, each in its solver's colour (a band where its points carry intervals)."""
    used: dict[str, int] = {}
    for name, style, points in lines:
        nth = used.get(style.solver, 0)
        used[style.solver] = nth + 1
        colour = solver_colour(style.solver)
        xs, ys = [p.x for p in points], [p.y for p in points]
        ax.plot(xs, ys, label=name, color=colour, linestyle=LINE_STYLES[nth % len(LINE_STYLES)], marker="o", ms=3)
        banded = [p for p in points if p.low is not None and p.high is not None]
        if banded:
            ax.fill_between(
                [p.x for p in banded], [p.low for p in banded], [p.high for p in banded], color=colour, alpha=0.15
            )
    if converged is not None:
        ax.axhline(converged, color="0.3", linestyle=(0, (5, 3)), linewidth=1.2, label=label)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)


def plot_paths(folder: Path, metric: str) -> tuple[Path, Path]:
    """The files of a metric's two plots: against NFE and against sampling time."""
    return folder / f"{metric}_vs_nfe.png", folder / f"{metric}_vs_time.png"


def figure(
    table: MetricTable,
    lines: list[tuple[str, list[Point]]],
    settings: PlotSettings,
    xlabel: str,
    xticks: list[int] | None,
) -> Any:
    """The matplotlib figure: one panel per group with values, in ``GROUPS`` order (shared y axis; log x unless
    ``xticks`` are given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    styled = [(name, settings.rows[name], pts) for name, pts in lines if pts]
    groups = [g for g in GROUPS if any(style.group == g for _, style, _ in styled)] or [GROUPS[0]]
    converged = settings.converged.get(table.name)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 4.6), dpi=100, sharey=True, squeeze=False)
    values = [p.y for _, _, pts in styled for p in pts] + ([converged] if converged is not None else [])
    for ax, group in zip(axes[0], groups):
        _draw_panel(ax, [line for line in styled if line[1].group == group], converged, settings.converged_label)
        ax.set_title(group, fontsize=10)
        ax.set_xlabel(xlabel, labelpad=2)
        if xticks is None:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(FuncFormatter(_two_and_five))
        else:
            ax.set_xticks(xticks)
    if _log_scale(values):
        axes[0][0].set_yscale("log")
    axes[0][0].set_ylabel(table.name)
    fig.suptitle(table.summary, fontsize=9)
    fig.tight_layout()
    return fig


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_file(path) as tmp:
        fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)


def metric_lines(table: MetricTable, budgets: list[int]) -> list[tuple[str, list[Point]]]:
    """Each row's points against NFE."""
    return [(label, _points([float(n) for n in budgets], row)) for label, row in table.rows]


def time_lines(table: MetricTable, throughput: MetricTable) -> list[tuple[str, list[Point]]]:
    """Each row's points against its cells' sampling time per sample (ms: 1000 / its samples/s)."""
    speeds = dict(throughput.rows)
    lines = []
    for label, row in table.rows:
        times = [1000.0 / e.value if e.has_value and e.value else None for e in speeds.get(label, [])]
        lines.append((label, _points(times, row)))
    return lines


def plot_metric(table: MetricTable, budgets: list[int], path: Path, settings: PlotSettings) -> None:
    """Plot a metric against NFE for every solver with at least one value."""
    _save(figure(table, metric_lines(table, budgets), settings, "NFE", budgets), path)


def plot_metric_vs_time(table: MetricTable, throughput: MetricTable, path: Path, settings: PlotSettings) -> None:
    """Plot a metric against each cell's sampling time per sample, log scale."""
    lines = time_lines(table, throughput)
    _save(figure(table, lines, settings, "sampling time per sample (ms, log scale)", None), path)
