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


def rich_tables(report: Report) -> list[Table]:
    """The metric tables for the terminal (best per column in bold green)."""
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
