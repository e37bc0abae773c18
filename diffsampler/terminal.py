"""The command line's terminal views: progress bars fed by the engines' callbacks and the benchmark tables.

Owned by ``diffsampler.cli``; with it, the only module that imports rich (engines report through
``diffsampler.progress`` and never draw).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from diffsampler.bench.report import Report
from diffsampler.bench.table import TIE_MARK
from diffsampler.bench.throughput import ThroughputResult
from diffsampler.progress import ProgressEvent, ProgressFn


@contextlib.contextmanager
def progress_bar(
    title: str, console: Console, *, enabled: bool = True, transient: bool = False
) -> Iterator[ProgressFn]:
    """A bar titled ``title`` (done/total, elapsed, ETA and the event's text) drawn from the events it is sent;
    nothing is drawn before the first event (an input error stays one line)."""
    columns = (
        TextColumn(f"[bold]{escape(title)}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
    )
    bar = Progress(*columns, console=console, disable=not enabled, transient=transient, auto_refresh=enabled)
    task = bar.add_task("", total=None)

    def update(event: ProgressEvent) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=event.done, total=event.total, description=escape(event.text))

    try:
        yield update
    finally:
        if bar.live.is_started:
            bar.stop()


def recommendation_lines(report: Report) -> list[str]:
    """The legend of the marks, then the recommendation: one line per NFE (``diffsampler.bench.recommend``)."""
    if not report.recommendations:
        return []
    metric = report.recommendations[0].metric
    legend = (
        f"{TIE_MARK} tied with the best of its column (paired bootstrap); "
        "± half the 95% interval, or [low, high] where it is not centred on the value"
    )
    return [legend, f"Recommended by {metric}:", *(f"  {r.text()}" for r in report.recommendations)]


CELL_ROOM = 3
"""Characters a rich table adds per column beyond its text (padding on both sides and a border)."""
LABEL_ROOM = 24
"""The most a solver label takes of a narrow terminal's width before it folds onto more lines."""


def name_table(title: str, rows: list[tuple[str, str]]) -> Table:
    """A two-column list (name, what it is): names never wrap or shorten; descriptions fold, never cut."""
    table = Table(title=title, show_header=False, title_justify="left", box=None)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


def _column_chunks(widths: list[int], room: int) -> list[list[int]]:
    """Consecutive column indices grouped so that each group's widths (plus their padding) fit in ``room``; a
    column wider than ``room`` stands alone."""
    chunks: list[list[int]] = [[]]
    used = 0
    for i, width in enumerate(widths):
        if chunks[-1] and used + width + CELL_ROOM > room:
            chunks.append([])
            used = 0
        chunks[-1].append(i)
        used += width + CELL_ROOM
    return chunks


def rich_tables(report: Report, width: int = 80) -> list[Table]:
    """The metric tables for the terminal (best per column in bold green, tied ones marked). No number is ever
    wrapped or cut: where the NFE columns do not fit in ``width`` characters, a metric's table is split into several
    tables of fewer columns (the solver column repeated); labels fold onto more lines instead."""
    out = []
    for table in report.tables:
        title = f"{table.name} ({'higher' if table.higher_is_better else 'lower'} is better), "
        title += table.samples_text(report.num_samples)
        texts = [[e.text() for e in row] for _, row in table.rows]
        widths = [max([len(f"NFE {n}"), *(len(row[j]) for row in texts)]) for j, n in enumerate(report.budgets)]
        label_width = min(max([len("solver"), *(len(label) for label, _ in table.rows)]), LABEL_ROOM)
        chunks = _column_chunks(widths, width - label_width - CELL_ROOM - 1)
        for part, columns in enumerate(chunks):
            shown = title if len(chunks) == 1 else f"{title} ({part + 1}/{len(chunks)})"
            rich_table = Table(title=shown, title_justify="left")
            rich_table.add_column("solver", style="bold cyan", overflow="fold", min_width=label_width)
            for j in columns:
                rich_table.add_column(f"NFE {report.budgets[j]}", justify="right", no_wrap=True, min_width=widths[j])
            for (label, row), text in zip(table.rows, texts):
                cells = [f"[bold green]{escape(text[j])}[/]" if row[j].best else escape(text[j]) for j in columns]
                rich_table.add_row(escape(label), *cells)
            out.append(rich_table)
    return out


def throughput_table(result: ThroughputResult) -> Table:
    """Per method: median CPU and wall seconds of a batch and samples per CPU second (numbers never cut)."""
    table = Table(title="medians over the rounds", title_justify="left")
    table.add_column("method", style="bold cyan", overflow="fold")
    for name in ("CPU s", "wall s", "samples/s"):
        table.add_column(name, justify="right", no_wrap=True)
    for m in result.methods:
        table.add_row(escape(m.name), f"{m.cpu_seconds:.3f}", f"{m.wall_seconds:.3f}", f"{m.samples_per_second:.1f}")
    return table
