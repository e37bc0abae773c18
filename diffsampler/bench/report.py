"""Reports made from the records: table.md, table.csv, results.json, sigmas.csv and plots (the terminal tables
are drawn by ``diffsampler.terminal``)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffsampler.atomic import atomic_write_bytes
from diffsampler.bench.config import BenchmarkConfig
from diffsampler.bench.metric_registry import Metric, scored_count
from diffsampler.bench.plan import AUTO_AFS_NOTE, Cell
from diffsampler.bench.plots import plot_metric, plot_metric_vs_time
from diffsampler.bench.store import ResultStore
from diffsampler.bench.table import AFS_MARK, Entry, MetricTable, Status


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

    @property
    def any_auto_afs(self) -> bool:
        return any(entry.auto_afs for table in self.tables for _, row in table.rows for entry in row)


def _mark_best(rows: list[tuple[str, list[Entry]]], higher_is_better: bool) -> list[tuple[str, list[Entry]]]:
    columns = len(rows[0][1]) if rows else 0
    best: list[float | None] = []
    for col in range(columns):
        values = [v for _, row in rows if row[col].has_value and (v := row[col].value) is not None]
        best.append((max(values) if higher_is_better else min(values)) if values else None)
    return [
        (
            label,
            [
                Entry(e.status, e.value, e.footnote, e.auto_afs, e.has_value and e.value == best[i])
                for i, e in enumerate(row)
            ],
        )
        for label, row in rows
    ]


def build_report(
    cfg: BenchmarkConfig,
    cells: list[Cell],
    metrics: list[Metric],
    store: ResultStore,
    unavailable: dict[tuple[str, int], str],
) -> Report:
    """Read the records of the current cells and lay them out per metric, with footnotes for n/a cells."""
    footnotes: list[str] = []
    notes: list[str] = []

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
                grid[m.name][key] = Entry(Status.OK, record["value"], auto_afs=cell.auto_afs)
                info["values"][m.name] = record["value"]
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
            scored_count(cfg.metric_options.get(m.name, {}), cfg.num_samples),
        )
        for m in metrics
    ]
    throughput = MetricTable(
        "samples_per_second", "samples per second, sampling alone", True, _mark_best(rows(speed), True)
    )
    return Report(cfg.model, cfg.num_samples, cfg.run.seed, budgets, tables, throughput, footnotes, notes, cell_rows)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown_table(table: MetricTable, budgets: list[int]) -> list[str]:
    lines = ["| solver | " + " | ".join(f"NFE {n}" for n in budgets) + " |", "|---|" + "---:|" * len(budgets)]
    for label, row in table.rows:
        lines.append(f"| {_md_escape(label)} | " + " | ".join(e.text(markdown=True) for e in row) + " |")
    return lines


def markdown(report: Report) -> str:
    """table.md: one table per metric (rows solver, columns NFE, best per column in bold), then footnotes."""
    out = [
        f"# Benchmark: {report.model}",
        "",
        f"{report.num_samples} samples per cell, the same latents "
        f"for every solver (sample i seeded by ({report.seed}, i)). "
        "**Bold**: the best in its NFE column. The exact sigma grid of every cell is in sigmas.csv.",
    ]
    for table in (*report.tables, report.throughput):
        better = "higher" if table.higher_is_better else "lower"
        out += [
            "",
            f"## {table.name}",
            "",
            f"{table.summary} ({better} is better); {table.samples_text(report.num_samples)} of each cell.",
            "",
            *_markdown_table(table, report.budgets),
        ]
    if report.any_auto_afs:
        out += ["", f"{AFS_MARK} {AUTO_AFS_NOTE}."]
    if report.notes:
        out += ["", *(f"- {note}" for note in report.notes)]
    if report.footnotes:
        out += ["", *(f"[^{i}]: {_md_escape(reason)}" for i, reason in enumerate(report.footnotes, 1))]
    return "\n".join(out) + "\n"


def csv_text(report: Report) -> str:
    """table.csv: metric, the samples of each cell it scores, solver, then one column per NFE with full-precision
    values ('n/a', 'failed' or empty)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["metric", "samples", "solver", *(f"nfe_{n}" for n in report.budgets)])
    for table in (*report.tables, report.throughput):
        samples = min(table.scored or report.num_samples, report.num_samples)
        for label, row in table.rows:
            writer.writerow(
                [
                    table.name,
                    samples,
                    label,
                    *(
                        repr(e.value)
                        if e.status is Status.OK
                        else ("" if e.status is Status.MISSING else e.status.value)
                        for e in row
                    ),
                ]
            )
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
        "cells": report.cells,
        "footnotes": report.footnotes,
        "notes": report.notes,
        "auto_afs_note": AUTO_AFS_NOTE if report.any_auto_afs else None,
    }


def write_reports(folder: Path, report: Report) -> None:
    """Write every report file atomically (plots last: they are the slowest)."""
    atomic_write_bytes(folder / "table.md", markdown(report).encode())
    atomic_write_bytes(folder / "table.csv", csv_text(report).encode())
    atomic_write_bytes(folder / "sigmas.csv", sigmas_csv(report).encode())
    atomic_write_bytes(folder / "results.json", (json.dumps(results_json(report), indent=2) + "\n").encode())
    for table in report.tables:
        plot_metric(table, report.budgets, folder / f"{table.name}_vs_nfe.png")
        plot_metric_vs_time(table, report.throughput, folder / f"{table.name}_vs_time.png")
