"""Reports made from the records: table.md, table.csv, results.json, sigmas.csv and plots (the terminal tables
are drawn by ``diffsampler.terminal``)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from diffsampler.atomic import atomic_write_bytes, own_files, write_marker
from diffsampler.bench.config import BenchmarkConfig
from diffsampler.bench.converged import Converged
from diffsampler.bench.metric_registry import Metric, scored_count
from diffsampler.bench.plan import AUTO_AFS_NOTE, Cell
from diffsampler.bench.plots import PlotSettings, RowStyle, plot_metric, plot_metric_vs_time, plot_paths, row_group
from diffsampler.bench.recommend import Recommendation, primary_metric, recommend
from diffsampler.bench.store import ResultStore
from diffsampler.bench.table import AFS_MARK, TIE_MARK, Entry, MetricTable, Status
from diffsampler.metrics.bootstrap import tied


@dataclass
class Report:
    """Everything the report files and the terminal show, built from the records only."""

    model: str
    num_samples: int
    seed: int
    budgets: list[int]
    tables: list[MetricTable]
    throughput: MetricTable
    footnotes: list[str]
    notes: list[str]
    cells: list[dict[str, Any]] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)
    """Per NFE, the best row by the primary metric and the rows tied with it (``diffsampler.bench.recommend``)."""
    styles: dict[str, RowStyle] = field(default_factory=dict)
    """Row label -> its solver and group (the plots' colour and panel)."""
    converged: Converged = field(default_factory=Converged)

    @property
    def plot_settings(self) -> PlotSettings:
        return PlotSettings(self.styles, self.converged.values, self.converged.label)

    def intro(self, bold: str) -> str:
        """The sentence under the title (``bold``: the word 'Bold' as the format marks it)."""
        return (
            f"{self.num_samples} samples per cell, the same latents for every solver (sample i seeded by "
            f"({self.seed}, i)). {bold}: the best in its NFE column; {TIE_MARK}: tied with it (the paired 95% "
            "bootstrap interval of the difference holds 0); ± half the 95% interval, or [low, high] where it is not "
            "centred on the value (its bounds in table.csv and results.json; docs/rankings.md). The exact sigma grid "
            "of every cell is in sigmas.csv."
        )

    @property
    def converged_text(self) -> str:
        """The sentence saying what the plots' dashed line is and its value per metric."""
        values = ", ".join(f"{name} {value:.4g}" for name, value in self.converged.values.items())
        return f"Dashed line in the plots: the converged value ({self.converged.label}): {values}."

    @property
    def any_auto_afs(self) -> bool:
        return any(entry.auto_afs for table in self.tables for _, row in table.rows for entry in row)


def _tied_with(entry: Entry, leader: Entry) -> bool:
    """Whether ``entry`` is tied with the column's best: both carry replicates of the same resampling (the paired
    test, ``bootstrap.tied``); False where either lacks them (records made without intervals)."""
    a, b = entry.replicates, leader.replicates
    if a is None or b is None or len(a) != len(b) or entry.value is None or leader.value is None:
        return False
    return tied(entry.value, np.asarray(a), leader.value, np.asarray(b))


def mark_column(column: list[Entry], higher_is_better: bool) -> list[Entry]:
    """The column's entries with the best (bold) and those statistically tied with it (``TIE_MARK``) marked."""
    values = [e.value for e in column if e.has_value and e.value is not None]
    if not values:
        return column
    best = max(values) if higher_is_better else min(values)
    leader = next(e for e in column if e.has_value and e.value == best)
    return [
        (replace(e, best=True) if e.value == best else replace(e, tied=_tied_with(e, leader))) if e.has_value else e
        for e in column
    ]


def _mark_best(rows: list[tuple[str, list[Entry]]], higher_is_better: bool) -> list[tuple[str, list[Entry]]]:
    """Every column of the rows marked (``mark_column``)."""
    if not rows:
        return rows
    columns = [mark_column([row[col] for _, row in rows], higher_is_better) for col in range(len(rows[0][1]))]
    return [(label, [column[i] for column in columns]) for i, (label, _) in enumerate(rows)]


def _scored_entry(record: dict[str, Any], auto_afs: bool) -> Entry:
    """The entry of a scored record: its value, interval and replicates (absent from records made before them)."""
    replicates = record.get("replicates")
    return Entry(
        Status.OK,
        record["value"],
        auto_afs=auto_afs,
        low=record.get("low"),
        high=record.get("high"),
        replicates=None if replicates is None else tuple(replicates),
    )


def build_report(
    cfg: BenchmarkConfig,
    cells: list[Cell],
    metrics: list[Metric],
    store: ResultStore,
    unavailable: dict[tuple[str, int], str],
    converged: Converged | None = None,
) -> Report:
    """Read the records of the current cells and lay them out per metric, with footnotes for n/a cells (and the
    interval of a record that carries ``low`` / ``high``)."""
    footnotes: list[str] = []
    converged = converged or Converged()
    names = [m.name for m in metrics]
    converged = replace(converged, values={k: v for k, v in converged.values.items() if k in names})
    notes: list[str] = [converged.note] if converged.note else []

    def footnote(reason: str) -> int:
        if reason not in footnotes:
            footnotes.append(reason)
        return footnotes.index(reason) + 1

    labels = list(dict.fromkeys(cell.entry.label for cell in cells))
    budgets = list(dict.fromkeys(cell.nfe for cell in cells))
    grid: dict[str, dict[tuple[str, int], Entry]] = {m.name: {} for m in metrics}
    speed: dict[tuple[str, int], Entry] = {}
    cell_rows: list[dict[str, Any]] = []
    for cell in cells:
        key = (cell.entry.label, cell.nfe)
        info: dict[str, Any] = {
            "label": cell.entry.label,
            "solver": cell.entry.solver,
            "options": cell.options,
            "auto_afs": cell.auto_afs,
            "nfe": cell.nfe,
            "values": {},
        }
        reason = cell.reason or unavailable.get(key)
        if reason is not None:
            entry = Entry(Status.NA, footnote=footnote(reason))
            for m in metrics:
                grid[m.name][key] = entry
            speed[key] = entry
            cell_rows.append({**info, "status": Status.NA.value, "reason": reason})
            continue
        assert cell.plan is not None
        info.update(
            schedule=cell.plan.schedule,
            steps=cell.plan.steps,
            sigmas=cell.plan.sigmas.tolist(),
            status=Status.MISSING.value,
        )
        for m in metrics:
            record = store.read(cell.entry.label, cell.nfe, cfg.num_samples, m.name)
            if record is None:
                grid[m.name][key] = Entry(Status.MISSING)
                continue
            if record.get("note") and record["note"] not in notes:
                notes.append(record["note"])
            timing = {k: record.get(k) for k in ("nfe_used", "sampling_seconds", "samples_per_second", "device")}
            info.update(timing)
            if record.get("error"):
                grid[m.name][key] = Entry(Status.FAILED, footnote=footnote(record["error"]))
                info.update(status=Status.FAILED.value, reason=record["error"])
            else:
                grid[m.name][key] = _scored_entry(record, cell.auto_afs)
                info["values"][m.name] = record["value"]
                for bound in ("low", "high"):
                    info.setdefault(bound, {})[m.name] = record.get(bound)
                info["status"] = Status.OK.value
            sps = record.get("samples_per_second")
            speed[key] = (
                Entry(Status.OK, sps, auto_afs=cell.auto_afs)
                if sps is not None and not record.get("error")
                else grid[m.name][key]
            )
        speed.setdefault(key, Entry(Status.MISSING))
        cell_rows.append(info)

    def rows(values: dict[tuple[str, int], Entry]) -> list[tuple[str, list[Entry]]]:
        return [(label, [values.get((label, nfe), Entry(Status.MISSING)) for nfe in budgets]) for label in labels]

    tables = [
        MetricTable(
            m.name,
            m.summary,
            not m.lower_is_better,
            _mark_best(rows(grid[m.name]), not m.lower_is_better),
            scored_count(cfg.metric_options.get(m.option_name, {}), cfg.num_samples),
        )
        for m in metrics
    ]
    throughput = MetricTable(
        "samples_per_second", "samples per second, sampling alone", True, _mark_best(rows(speed), True)
    )
    primary = next(t for t in tables if t.name == primary_metric(cfg.primary_metric, [t.name for t in tables]))
    by_key = {(row["label"], row["nfe"]): row for row in cell_rows}
    advice = recommend(primary, budgets, by_key)
    styles = {cell.entry.label: RowStyle(cell.entry.solver, row_group(cell.entry)) for cell in cells}
    return Report(
        cfg.model,
        cfg.num_samples,
        cfg.run.seed,
        budgets,
        tables,
        throughput,
        footnotes,
        notes,
        cell_rows,
        recommendations=advice,
        styles=styles,
        converged=converged,
    )


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown_table(table: MetricTable, budgets: list[int]) -> list[str]:
    lines = ["| solver | " + " | ".join(f"NFE {n}" for n in budgets) + " |", "|---|" + "---:|" * len(budgets)]
    for label, row in table.rows:
        lines.append(f"| {_md_escape(label)} | " + " | ".join(e.text(markdown=True) for e in row) + " |")
    return lines


def markdown(report: Report) -> str:
    """table.md: one table per metric (rows solver, columns NFE, best per column in bold), then footnotes."""
    out = [f"# Benchmark: {report.model}", "", report.intro("**Bold**")]
    if report.recommendations:
        metric = report.recommendations[0].metric
        out += ["", f"## Recommendation (by {metric})", "", *(f"- {r.text()}" for r in report.recommendations)]
    for table in (*report.tables, report.throughput):
        out += [
            "",
            f"## {table.name}",
            "",
            table.caption(report.num_samples),
            "",
            *_markdown_table(table, report.budgets),
        ]
    if report.any_auto_afs:
        out += ["", f"{AFS_MARK} {AUTO_AFS_NOTE}."]
    if report.converged.values:
        out += ["", report.converged_text]
    if report.notes:
        out += ["", *(f"- {note}" for note in report.notes)]
    if report.footnotes:
        out += ["", *(f"[^{i}]: {_md_escape(reason)}" for i, reason in enumerate(report.footnotes, 1))]
    return "\n".join(out) + "\n"


def _csv_cell(entry: Entry) -> list[str]:
    """The value (full precision; 'n/a', 'failed' or empty), the interval's bounds and the tie mark of one cell."""
    if entry.status is not Status.OK:
        return ["" if entry.status is Status.MISSING else entry.status.value, "", "", ""]
    bounds = ["" if b is None else repr(b) for b in (entry.low, entry.high)]
    return [repr(entry.value), *bounds, str(entry.tied).lower()]


def csv_text(report: Report) -> str:
    """table.csv: metric, the samples of each cell it scores, solver, then per NFE the value at full precision
    ('n/a', 'failed' or empty), the 95% interval's low and high, and whether it is tied with the column's best."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    per_nfe = [f"nfe_{n}{part}" for n in report.budgets for part in ("", "_low", "_high", "_tied")]
    writer.writerow(["metric", "samples", "solver", *per_nfe])
    for table in (*report.tables, report.throughput):
        samples = min(table.scored or report.num_samples, report.num_samples)
        for label, row in table.rows:
            writer.writerow([table.name, samples, label, *(part for e in row for part in _csv_cell(e))])
    return buf.getvalue()


def sigmas_csv(report: Report) -> str:
    """sigmas.csv: the exact grid of every runnable cell, sigmas space-separated at full precision."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["solver", "nfe", "schedule", "steps", "afs", "sigmas"])
    for cell in report.cells:
        if "sigmas" in cell:
            writer.writerow(
                [
                    cell["label"],
                    cell["nfe"],
                    cell["schedule"],
                    cell["steps"],
                    cell["options"].get("afs"),
                    " ".join(repr(s) for s in cell["sigmas"]),
                ]
            )
    return buf.getvalue()


def _cells_with_marks(report: Report) -> list[dict[str, Any]]:
    """The report's cells with, per metric, whether each is the best of its column and whether tied with it."""
    marks: dict[tuple[str, int], dict[str, dict[str, bool]]] = {}
    for table in report.tables:
        for label, row in table.rows:
            for nfe, entry in zip(report.budgets, row):
                if entry.has_value:
                    cell = marks.setdefault((label, nfe), {"best": {}, "tied": {}})
                    cell["best"][table.name], cell["tied"][table.name] = entry.best, entry.tied
    return [{**cell, **marks.get((cell["label"], cell["nfe"]), {})} for cell in report.cells]


def results_json(report: Report) -> dict[str, Any]:
    """results.json: the run, the metrics, every cell with its grid, timing and values, footnotes and notes."""
    return {
        "model": report.model,
        "num_samples": report.num_samples,
        "seed": report.seed,
        "nfe": report.budgets,
        "metrics": [
            {"name": t.name, "summary": t.summary, "higher_is_better": t.higher_is_better} for t in report.tables
        ],
        "cells": _cells_with_marks(report),
        "primary_metric": report.recommendations[0].metric if report.recommendations else None,
        "recommendation": [r.to_json() for r in report.recommendations],
        "footnotes": report.footnotes,
        "notes": report.notes,
        "auto_afs_note": AUTO_AFS_NOTE if report.any_auto_afs else None,
        "converged": {"label": report.converged.label, "values": report.converged.values}
        if report.converged.values
        else None,
    }


def write_reports(folder: Path, report: Report) -> None:
    """Write every report file but report.html atomically (plots last: they are the slowest; report.html, which
    inlines them, is written after them by ``diffsampler.bench.html_report.write_html``); the folder's marker lists
    them all (with those of earlier runs), so that ``--fresh`` deletes exactly these."""
    names = ["table.md", "table.csv", "sigmas.csv", "results.json", "report.html"]
    names += [f"{t.name}_vs_{x}.png" for t in report.tables for x in ("nfe", "time")]
    write_marker(folder, "benchmark", (own_files(folder) or set()) | set(names))
    atomic_write_bytes(folder / "table.md", markdown(report).encode())
    atomic_write_bytes(folder / "table.csv", csv_text(report).encode())
    atomic_write_bytes(folder / "sigmas.csv", sigmas_csv(report).encode())
    atomic_write_bytes(folder / "results.json", (json.dumps(results_json(report), indent=2) + "\n").encode())
    settings = report.plot_settings
    for table in report.tables:
        by_nfe, by_time = plot_paths(folder, table.name)
        plot_metric(table, report.budgets, by_nfe, settings)
        plot_metric_vs_time(table, report.throughput, by_time, settings)
