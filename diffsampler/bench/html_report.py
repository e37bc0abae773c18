"""report.html: one self-contained page per benchmark run (the tables of table.md, the plots and the sample
grids), images inlined as base64 data URIs and the style inline, so it opens offline with no script or network."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from diffsampler.atomic import atomic_write_bytes
from diffsampler.bench.plan import AUTO_AFS_NOTE
from diffsampler.bench.plots import plot_paths
from diffsampler.bench.report import Report
from diffsampler.bench.store import ResultStore
from diffsampler.bench.table import AFS_MARK, MetricTable

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: bold; background: #e8f5e9; }
th { background: #f3f3f3; }
tr th:first-child { text-align: left; }
.scroll { overflow-x: auto; }
img.plot { max-width: 100%; display: block; margin: 0.5em 0; }
img.grid { width: 120px; image-rendering: pixelated; display: block; }
p.caption { color: #555; }
"""


def data_uri(path: Path) -> str:
    """The PNG at ``path`` as a data URI (the page needs no other file)."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _table(table: MetricTable, budgets: list[int]) -> list[str]:
    """The metric table (rows solver, columns NFE, the best of each column bold)."""
    head = "".join(f"<th>NFE {n}</th>" for n in budgets)
    out = ['<div class="scroll"><table>', f"<tr><th>solver</th>{head}</tr>"]
    for label, row in table.rows:
        cells = "".join(f'<td class="num{" best" if e.best else ""}">{html.escape(e.text())}</td>' for e in row)
        out.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    return [*out, "</table></div>"]


def _images(paths: list[Path], alt: str) -> list[str]:
    return [f'<img class="plot" alt="{html.escape(alt)} {p.name}" src="{data_uri(p)}">' for p in paths if p.is_file()]


def _grids(report: Report, grids: dict[tuple[str, int], Path]) -> list[str]:
    """The sample grid of every cell that has one: rows solver, columns NFE."""
    if not any(path.is_file() for path in grids.values()):
        return []
    labels = list(dict.fromkeys(label for label, _ in grids))
    out = ["<h2>Sample grids</h2>", '<p class="caption">The first samples of each cell, from the same latents.</p>']
    out += ['<div class="scroll"><table>', "<tr><th>solver</th>"]
    out[-1] += "".join(f"<th>NFE {n}</th>" for n in report.budgets) + "</tr>"
    for label in labels:
        cells = []
        for nfe in report.budgets:
            path = grids.get((label, nfe))
            alt = html.escape(f"{label} at NFE {nfe}")
            cells.append(
                f'<td><img class="grid" alt="{alt}" src="{data_uri(path)}"></td>'
                if path is not None and path.is_file()
                else "<td>-</td>"
            )
        out.append(f"<tr><th>{html.escape(label)}</th>{''.join(cells)}</tr>")
    return [*out, "</table></div>"]


def _notes(report: Report) -> list[str]:
    out = []
    if report.any_auto_afs:
        out.append(f"<p>{AFS_MARK} {html.escape(AUTO_AFS_NOTE)}.</p>")
    if report.converged.values:
        out.append(f"<p>{html.escape(report.converged_text)}</p>")
    if report.notes:
        out += ["<ul>", *(f"<li>{html.escape(note)}</li>" for note in report.notes), "</ul>"]
    if report.footnotes:
        out += ["<ol>", *(f"<li>{html.escape(reason)}</li>" for reason in report.footnotes), "</ol>"]
    return out


def write_html(folder: Path, report: Report) -> None:
    """Write report.html atomically into the run folder (after the plots and grids it inlines)."""
    plots = {table.name: list(plot_paths(folder, table.name)) for table in report.tables}
    store = ResultStore(folder)
    grids = {(cell["label"], cell["nfe"]): store.grid_path(cell["label"], cell["nfe"]) for cell in report.cells}
    atomic_write_bytes(folder / "report.html", html_page(report, plots, grids).encode())


def html_page(report: Report, plots: dict[str, list[Path]], grids: dict[tuple[str, int], Path]) -> str:
    """The page: title, the intro and recommendation of table.md, per metric its table and plots (``plots``:
    metric -> PNG files), the throughput table, the notes and footnotes, then the sample grids (``grids``:
    (label, NFE) -> PNG file)."""
    title = html.escape(f"Benchmark: {report.model}")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{title}</title><style>{STYLE}</style></head><body>",
        f"<h1>{title}</h1>",
        f"<p>{html.escape(report.intro('BOLD')).replace('BOLD', '<strong>Bold</strong>')}</p>",
    ]
    if report.recommendations:
        metric = html.escape(report.recommendations[0].metric)
        out += [f"<h2>Recommendation (by {metric})</h2>", "<ul>"]
        out += [*(f"<li>{html.escape(r.text())}</li>" for r in report.recommendations), "</ul>"]
    for table in (*report.tables, report.throughput):
        out += [
            f"<h2>{html.escape(table.name)}</h2>",
            f'<p class="caption">{html.escape(table.caption(report.num_samples))}</p>',
        ]
        out += _table(table, report.budgets)
        out += _images(plots.get(table.name, []), table.name)
    out += _notes(report)
    out += _grids(report, grids)
    return "\n".join([*out, "</body></html>"]) + "\n"
