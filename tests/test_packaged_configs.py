"""The example configs are packaged (one copy: the top-level configs/) and named without a path from any folder;
console tables never wrap or cut a number at a narrow terminal."""

import fnmatch
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from diffsampler.bench.report import Report
from diffsampler.bench.table import Entry, MetricTable, Status
from diffsampler.cli import app
from diffsampler.errors import UserError
from diffsampler.packaged_configs import KINDS, ROOT, packaged_configs, resolve_config
from diffsampler.terminal import rich_tables

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_the_packaged_configs_are_the_top_level_folder_and_all_reach_the_wheel():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    # An editable install reads the top-level folder through the package's link; a built install (what .ci/run
    # makes) holds copies, which must be the top-level files byte for byte.
    ours = {p.relative_to(REPO / "configs"): p.read_bytes() for p in (REPO / "configs").rglob("*") if p.is_file()}
    installed = {p.relative_to(ROOT): p.read_bytes() for p in ROOT.rglob("*") if p.is_file()}
    assert installed == ours
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["diffsampler"]
    files = [str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*") if p.is_file()]
    unpackaged = [f for f in files if not any(fnmatch.fnmatch("diffsampler/" + f, "diffsampler/" + g) for g in globs)]
    assert files and unpackaged == []
    assert {p.parent.name for p in (REPO / "configs").glob("*/*.yaml")} >= set(KINDS.values())


def test_an_existing_path_wins_over_a_packaged_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config("gmm-fmnist", "benchmark") == ROOT / "benchmark" / "gmm-fmnist.yaml"
    assert resolve_config("gmm-fmnist.yaml", "benchmark") == ROOT / "benchmark" / "gmm-fmnist.yaml"
    (tmp_path / "gmm-fmnist").write_text("nfe: [3]\n")
    assert resolve_config("gmm-fmnist", "benchmark") == Path("gmm-fmnist")
    assert resolve_config("gmm-fmnist", "compute-ems") == Path("gmm-fmnist")


def test_names_are_per_command_and_a_typo_says_did_you_mean(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config("fmnist-p1", "train-model") == ROOT / "train" / "fmnist-p1.yaml"
    assert resolve_config("fmnist-p1", "compute-ems") == ROOT / "ems" / "fmnist-p1.yaml"
    with pytest.raises(UserError, match="did you mean 'fmnist-p1-full'"):
        resolve_config("fmnist-p1-fulll", "benchmark")
    with pytest.raises(UserError, match="config file not found: x/y.yaml"):
        resolve_config("x/y.yaml", "benchmark")


def test_list_shows_each_packaged_config_and_marks_those_reading_repository_files():
    result = runner.invoke(app, ["list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    lines = result.output.splitlines()
    for command in KINDS:
        for name, config in packaged_configs(command).items():
            (line,) = [line for line in lines if line.split()[:2] == [command, name]]
            assert ("reads files of the repository" in line) == bool(config.reads), line
    assert "results/amed" in " ".join(packaged_configs("benchmark")["fmnist-p1-full"].reads)
    assert packaged_configs("sample")["toy2d-heun-afs"].reads == ()


def test_a_named_config_runs_from_a_folder_outside_the_repository(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "diffsampler", "sample", "--config", "toy2d-heun-afs", "--out", "out"]
    done = subprocess.run([*command, "--num-samples", "8"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "gmm-2d-heun-nfe7" / "samples.npz").is_file()
    wrong = subprocess.run(
        [*command[:5], "toy2d-heun", "--out", "out"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert wrong.returncode == 2
    assert wrong.stderr.count("\n") == 1 and "did you mean 'toy2d-heun-afs'" in wrong.stderr


def _report(values: list[float]) -> Report:
    budgets = list(range(3, 3 + len(values)))
    rows = [
        ("a solver label long enough to need folding", [Entry(Status.OK, v) for v in values]),
        ("euler", [Entry(Status.NA, footnote=1)] * len(values)),
    ]
    table = MetricTable("fd", "a distance", False, rows)
    return Report("m", 8, 0, budgets, [table], MetricTable("samples_per_second", "", True, []), ["why"], [], [])


@pytest.mark.parametrize("width", [40, 60, 100])
def test_narrow_terminal_tables_never_cut_a_number(width):
    values = [17890.123, 0.0001234567, 5.5e-12, 123456789.0, 3.0, 42.5, 0.5, 1e30]
    console = Console(width=width, record=True, file=open(os.devnull, "w"))
    for table in rich_tables(_report(values), width):
        console.print(table)
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= width
    for value in values:
        assert f" {Entry(Status.OK, value).text()} " in text
    assert text.count("n/a [1]") == len(values)
    assert f"NFE {3 + len(values) - 1}" in text
