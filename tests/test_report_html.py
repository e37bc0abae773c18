"""report.html of a benchmark run: self-contained (every image a data URI, no script, stylesheet link or URL), with
the tables of table.md cell for cell, every plot and every sample grid; and the converged line's values."""

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diffsampler.bench.converged import read_converged
from diffsampler.cli import app
from diffsampler.errors import UserError

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """The page's tables (rows of cell texts), image sources and every attribute value."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self.attributes: list[str] = []
        self.tags: set[str] = set()
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes += [value or "" for _, value in attrs]
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def markdown_tables(text: str) -> list[list[list[str]]]:
    """The tables of table.md as cell texts, marks as the terminal writes them (no bold, footnotes 'n/a [1]')."""
    tables: list[list[list[str]]] = []
    previous = ""
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            if not previous.startswith("|"):
                tables.append([])
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            cells = [c.replace("**", "").replace("\\*", "*") for c in cells]
            tables[-1].append([re.sub(r"\[\^(\d+)\]", r" [\1]", c) for c in cells])
        previous = line
    return tables


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    args = ["benchmark", "--model", "gmm-fmnist", "--solvers", "euler,heun", "--nfe", "2,3", "--num-samples", "8"]
    result = runner.invoke(app, [*args, "--metrics", "rmse,pixel_fd", "--out", str(out), "--name", "run"])
    assert result.exit_code == 0, result.output
    return out / "run"


def test_report_html_holds_the_tables_of_table_md_plots_and_grids_inline(run):
    page = Page()
    page.feed((run / "report.html").read_text())
    want = markdown_tables((run / "table.md").read_text())
    assert len(want) == 3  # rmse, pixel_fd, samples_per_second
    assert page.tables[: len(want)] == want
    grids = page.tables[len(want)]
    assert [row[0] for row in grids] == ["solver", "euler", "heun"]
    plots = sorted(p.name for p in run.glob("*.png"))
    cells = sorted(p for p in (run / "grids").rglob("*.png"))
    assert len(page.images) == len(plots) + len(cells) == 4 + 4
    inlined = {base64.b64decode(src.split(",", 1)[1]) for src in page.images}
    assert inlined == {p.read_bytes() for p in [*run.glob("*.png"), *cells]}
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert all(data.startswith(PNG) for data in inlined)


def test_report_html_needs_no_network_or_script(run):
    text = (run / "report.html").read_text()
    page = Page()
    page.feed(text)
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}
    assert not [a for a in page.attributes if re.match(r"\s*(https?:|//|file:)", a)]
    assert "url(" not in text and "@import" not in text


def _other_run(folder: Path, **fields) -> Path:
    cells = [
        {"label": "dpmpp 3M", "nfe": 40, "values": {"fd": 2.0}},
        {"label": "dpmpp 3M", "nfe": 80, "values": {"fd": 1.5, "kid": 0.25}},
    ]
    run = {"model": "m", "seed": 0, "num_samples": 100, "cells": cells, **fields}
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(run))
    return folder


def test_converged_values_are_the_other_runs_highest_nfe(tmp_path):
    converged = read_converged(str(_other_run(tmp_path / "conv")), "m", 0, 100)
    assert converged.values == {"fd": 1.5, "kid": 0.25}
    assert converged.label == "converged: dpmpp 3M at NFE 80"
    assert converged.note is None


def test_a_converged_run_on_other_samples_is_refused_and_a_missing_one_noted(tmp_path):
    with pytest.raises(UserError, match="same ones"):
        read_converged(str(_other_run(tmp_path / "conv", num_samples=50)), "m", 0, 100)
    missing = read_converged(str(tmp_path / "nothere"), "m", 0, 100)
    assert missing.values == {} and "not found" in missing.note


def test_the_converged_value_reaches_table_md(run, tmp_path):
    other = run.parent / "conv"
    args = ["benchmark", "--model", "gmm-fmnist", "--solvers", "dpmpp", "--nfe", "12", "--num-samples", "8"]
    result = runner.invoke(app, [*args, "--metrics", "pixel_fd", "--out", str(run.parent), "--name", "conv"])
    assert result.exit_code == 0, result.output
    value = json.loads((other / "results.json").read_text())["cells"][0]["values"]["pixel_fd"]
    args = ["benchmark", "--model", "gmm-fmnist", "--solvers", "euler", "--nfe", "2", "--num-samples", "8"]
    result = runner.invoke(app, [*args, "--metrics", "pixel_fd", "--out", str(tmp_path), "--set", f"converged={other}"])
    assert result.exit_code == 0, result.output
    table = (tmp_path / "gmm-fmnist" / "table.md").read_text()
    assert f"(converged: dpmpp at NFE 12): pixel_fd {value:.4g}." in table


def test_report_only_rewrites_the_reports_from_the_records_and_samples_nothing(run, tmp_path):
    table = (run / "table.md").read_text()
    records = {p: p.read_bytes() for p in (run / "records").rglob("*.json")}
    for name in ("table.md", "report.html", "rmse_vs_nfe.png"):
        (run / name).unlink()
    args = ["benchmark", "--model", "gmm-fmnist", "--solvers", "euler,heun", "--nfe", "2,3", "--num-samples", "8"]
    args += ["--metrics", "rmse,pixel_fd", "--out", str(run.parent), "--name", "run", "--report-only"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "0 cells sampled, 4 reused" in result.output
    assert (run / "table.md").read_text() == table
    assert (run / "report.html").is_file() and (run / "rmse_vs_nfe.png").is_file()
    assert {p: p.read_bytes() for p in (run / "records").rglob("*.json")} == records
    empty = runner.invoke(app, [*args[:-5], "--out", str(tmp_path), "--name", "none", "--report-only"])
    assert empty.exit_code == 2 and "holds no benchmark run" in empty.output
