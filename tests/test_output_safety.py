"""Outputs never remove what the toolbox did not write; names are single path components (issue 21)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from diffsampler.cli import app

runner = CliRunner()
SAMPLE = ["sample", "--model", "gmm-2d", "--solver", "euler", "--nfe", "3", "--num-samples", "4"]
EMS = ["compute-ems", "--model", "gmm-2d", "--grid", "2", "--num-data", "8", "--batch", "8"]
BENCH = ["benchmark", "--model", "gmm-2d", "--solvers", "euler", "--nfe", "2", "--num-samples", "8", "--metrics", "pixel_fd"]


def one_line_exit_2(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    for word in words:
        assert word in result.output


def test_sample_refuses_a_user_folder_and_a_user_file(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "keep.txt").write_text("x")
    (tmp_path / "somefile.txt").write_text("y")
    one_line_exit_2(runner.invoke(app, [*SAMPLE, "--out", str(tmp_path), "--name", "v"]), "left alone")
    one_line_exit_2(runner.invoke(app, [*SAMPLE, "--out", str(tmp_path), "--name", "somefile.txt"]), "left alone")
    assert (tmp_path / "v" / "keep.txt").read_text() == "x" and (tmp_path / "somefile.txt").read_text() == "y"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somefile.txt", "v"]


def test_sample_replaces_its_own_folder(tmp_path):
    args = [*SAMPLE, "--out", str(tmp_path), "--name", "run"]
    assert runner.invoke(app, args).exit_code == 0
    first = np.load(tmp_path / "run" / "samples.npz")["samples"]
    result = runner.invoke(app, [*args, "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert not np.array_equal(np.load(tmp_path / "run" / "samples.npz")["samples"], first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_sample_does_not_replace_another_commands_folder(tmp_path):
    assert runner.invoke(app, [*EMS, "--out", str(tmp_path / "stats")]).exit_code == 0
    before = sorted(p.name for p in (tmp_path / "stats").iterdir())
    one_line_exit_2(runner.invoke(app, [*SAMPLE, "--out", str(tmp_path), "--name", "stats"]), "compute-ems")
    assert sorted(p.name for p in (tmp_path / "stats").iterdir()) == before


@pytest.mark.parametrize("name", ["/abs/path", "..", "a/b", ".", "../x"])
def test_names_are_single_path_components(tmp_path, name):
    work = tmp_path / "work"
    work.mkdir()
    one_line_exit_2(runner.invoke(app, [*SAMPLE, "--out", str(work), "--name", name]), "single")
    one_line_exit_2(runner.invoke(app, [*BENCH, "--out", str(work), "--name", name]))
    assert list(tmp_path.rglob("*")) == [work]


def test_compute_ems_refuses_a_user_folder_and_replaces_its_own(tmp_path):
    target = tmp_path / "v"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    one_line_exit_2(runner.invoke(app, [*EMS, "--out", str(target)]), "left alone")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"] and (target / "keep.txt").read_text() == "x"
    own = tmp_path / "own"
    assert runner.invoke(app, [*EMS, "--out", str(own)]).exit_code == 0
    again = runner.invoke(app, [*EMS, "--out", str(own), "--seed", "1"])
    assert again.exit_code == 0, again.output
    assert json.loads((own / "meta.json").read_text())["seed"] == 1


def test_compute_ems_refuses_a_user_partial_folder(tmp_path):
    (tmp_path / "v.partial").mkdir()
    (tmp_path / "v.partial" / "keep.txt").write_text("x")
    one_line_exit_2(runner.invoke(app, [*EMS, "--out", str(tmp_path / "v")]), "did not write")
    assert (tmp_path / "v.partial" / "keep.txt").read_text() == "x" and not (tmp_path / "v").exists()


def test_benchmark_fresh_deletes_only_a_run(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    one_line_exit_2(runner.invoke(app, [*BENCH, "--out", str(tmp_path), "--name", "v"]), "not a benchmark run")
    one_line_exit_2(runner.invoke(app, [*BENCH, "--out", str(tmp_path), "--name", "v", "--fresh"]), "leaves it alone")
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]
    assert runner.invoke(app, [*BENCH, "--out", str(tmp_path), "--name", "run"]).exit_code == 0
    fresh = runner.invoke(app, [*BENCH, "--out", str(tmp_path), "--name", "run", "--fresh", "--seed", "3"])
    assert fresh.exit_code == 0, fresh.output
    assert json.loads((tmp_path / "run" / "run.json").read_text())["seed"] == 3
