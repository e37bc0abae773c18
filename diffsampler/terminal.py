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


def rich_tables(report: Report) -> list[Table]:
    """The metric tables for the terminal (best per column in bold green, tied ones marked)."""
    out = []
    for table in report.tables:
        better = "higher" if table.higher_is_better else "lower"
        title = f"{table.name} ({better} is better), {table.samples_text(report.num_samples)}"
        rich_table = Table(title=title, title_justify="left", min_width=len(title))
        rich_table.add_column("solver", style="bold cyan")
        for nfe in report.budgets:
            rich_table.add_column(f"NFE {nfe}", justify="right")
        for label, row in table.rows:
            rich_table.add_row(
                escape(label), *(f"[bold green]{escape(e.text())}[/]" if e.best else escape(e.text()) for e in row)
            )
        out.append(rich_table)
    return out
