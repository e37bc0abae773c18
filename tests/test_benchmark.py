"""`diffsampler benchmark`: planning, the resumable result store, reports and one-line errors."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from diffsampler.bench.config import parse_nfe
from diffsampler.cli import app
from diffsampler.errors import UserError
from diffsampler.schedules import get_sigmas

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
SMALL = ["--model", "gmm-2d", "--num-samples", "64", "--solvers", "euler,heun,dpm2"]


def bench(tmp_path: Path, *args: str):
    return runner.invoke(app, ["benchmark", *SMALL, "--out", str(tmp_path), "--name", "run", *args])


def records(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted((folder / "records").rglob("*.json"))}


def all_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_parse_nfe_lists_and_ranges():
    assert parse_nfe("3,5,7,9") == [3, 5, 7, 9]
    assert parse_nfe("3-6") == [3, 4, 5, 6]
    assert parse_nfe("8, 3-4") == [3, 4, 8]
    for bad in ("x", "5-3", "3..5"):
        with pytest.raises(UserError):
            parse_nfe(bad)


def test_reports_agree_with_records(tmp_path):
    result = bench(tmp_path, "--nfe", "2,3,4", "--set", "auto_afs=false")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "run"
    recs = [json.loads(b) for b in records(folder).values()]
    # heun and dpm2 cannot meet NFE 3 without AFS: 7 runnable cells x 3 default metrics.
    assert len(recs) == 7 * 3
    for rec in recs:
        assert rec["nfe_used"] == rec["nfe"]
        assert rec["sigmas"] == get_sigmas(rec["schedule"], rec["steps"], 0.002, 80.0).tolist()
        assert rec["samples_per_second"] > 0 and rec["sampling_seconds"] > 0
    values = {(r["metric"], r["label"], r["nfe"]): r["value"] for r in recs}

    with open(folder / "table.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for nfe in (2, 3, 4):
            cell = row[f"nfe_{nfe}"]
            if row["metric"] == "samples_per_second":
                continue
            if (row["metric"], row["solver"], nfe) in values:
                assert float(cell) == values[(row["metric"], row["solver"], nfe)]
            else:
                assert cell == "n/a" and nfe == 3 and row["solver"] in ("heun", "dpm2")

    data = json.loads((folder / "results.json").read_text())
    for cell in data["cells"]:
        if cell["status"] == "ok":
            for metric, value in cell["values"].items():
                assert value == values[(metric, cell["label"], cell["nfe"])]
            assert cell["sigmas"][0] == 80.0 and len(cell["sigmas"]) == cell["steps"] + 1
        else:
            assert cell["status"] == "n/a" and "cannot be met exactly" in cell["reason"]

    table = (folder / "table.md").read_text()
    rmse_rows = table.split("## rmse")[1].split("## ")[0]
    for nfe in (2, 4):
        best = min(v for (m, _, n), v in values.items() if m == "rmse" and n == nfe)
        assert f"**{best:.4g}" in rmse_rows
    assert "n/a[^1]" in table and "[^1]: " in table
    for name in ("rmse", "max_error", "pixel_fd"):
        for axis in ("nfe", "time"):
            with Image.open(folder / f"{name}_vs_{axis}.png") as img:
                img.verify()
    grids = sorted((folder / "grids").rglob("*.png"))
    assert len(grids) == 7
    with Image.open(grids[0]) as img:
        img.verify()
    assert "rmse" in result.output and "n/a" in result.output


def test_rerun_reuses_records_and_more_samples_extend(tmp_path):
    assert bench(tmp_path, "--nfe", "2").exit_code == 0
    folder = tmp_path / "run"
    before = records(folder)
    again = bench(tmp_path, "--nfe", "2")
    assert again.exit_code == 0 and "0 cells sampled, 3 reused" in again.output
    assert records(folder) == before
    more = bench(tmp_path, "--nfe", "2", "--num-samples", "96")
    assert more.exit_code == 0, more.output
    after = records(folder)
    assert {k: after[k] for k in before} == before
    assert len(after) == 2 * len(before)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--solvers", "eulr"], "unknown solver 'eulr'"),
        (["--model", "nope"], "unknown model 'nope'"),
        (["--metrics", "fd"], "unknown metric 'fd'"),
        (["--nfe", ""], "NFE list is empty"),
        (["--nfe", "0,2"], "at least 1"),
        (["--num-samples", "1"], "num_samples"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    result = runner.invoke(app, ["benchmark", "--model", "gmm-2d", "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = runner.invoke(app, ["benchmark", *SMALL, "--nfe", "2", "--out", str(locked / "results")])
    finally:
        locked.chmod(0o700)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert list(locked.iterdir()) == []


def test_changed_config_under_an_existing_run_is_refused(tmp_path):
    assert bench(tmp_path, "--nfe", "2").exit_code == 0
    folder = tmp_path / "run"
    before = all_files(folder), records(folder)
    result = bench(tmp_path, "--nfe", "2", "--seed", "1")
    assert result.exit_code == 2 and "not comparable (seed was 0, now 1)" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert (all_files(folder), records(folder)) == before
    config = tmp_path / "c.yaml"
    config.write_text("solvers:\n  - solver: dpm2\n    label: euler\n    options: {r: 0.3}\n")
    changed = runner.invoke(
        app,
        [
            "benchmark",
            "-c",
            str(config),
            "--model",
            "gmm-2d",
            "--num-samples",
            "64",
            "--nfe",
            "2",
            "--out",
            str(tmp_path),
            "--name",
            "run",
        ],
    )
    assert changed.exit_code == 2 and "solver label 'euler' was" in changed.output
    fresh = bench(tmp_path, "--nfe", "2", "--seed", "1", "--fresh")
    assert fresh.exit_code == 0, fresh.output
    assert all(json.loads(b)["seed"] == 1 for b in records(folder).values())


def _run_until_killed(out: Path, num_samples: int, min_records: int) -> None:
    cmd = [
        sys.executable,
        "-m",
        "diffsampler",
        "benchmark",
        "--model",
        "gmm-2d",
        "--nfe",
        "1-12",
        "--solvers",
        "euler,heun,dpm2",
        "--num-samples",
        str(num_samples),
        "--out",
        str(out),
        "--name",
        "run",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = out / "run" / "records"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(folder.rglob(f"n{num_samples}/*.json"))) >= min_records:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the benchmark finished before it could be killed; give it more cells"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()


def test_killed_run_resumes_with_identical_records(tmp_path):
    _run_until_killed(tmp_path, 200, 6)
    folder = tmp_path / "run"
    partial = records(folder)
    assert 6 <= len(partial) < 36 * 3
    result = runner.invoke(
        app,
        [
            "benchmark",
            "--model",
            "gmm-2d",
            "--nfe",
            "1-12",
            "--solvers",
            "euler,heun,dpm2",
            "--num-samples",
            "200",
            "--out",
            str(tmp_path),
            "--name",
            "run",
        ],
    )
    assert result.exit_code == 0, result.output
    complete = records(folder)
    assert {k: complete[k] for k in partial} == partial
    assert len(complete) == 36 * 3
    assert [p.name for p in folder.rglob(".*")] == [".diffsampler"]  # the marker listing our reports; no temporaries
    # The same for a bigger sample count in the same run: the 200-sample records stay as they were.
    _run_until_killed(tmp_path, 300, 3)
    partial_big = records(folder)
    rerun = runner.invoke(
        app,
        [
            "benchmark",
            "--model",
            "gmm-2d",
            "--nfe",
            "1-12",
            "--solvers",
            "euler,heun,dpm2",
            "--num-samples",
            "300",
            "--out",
            str(tmp_path),
            "--name",
            "run",
        ],
    )
    assert rerun.exit_code == 0, rerun.output
    final = records(folder)
    assert {k: final[k] for k in partial_big} == partial_big
    assert len(final) == 2 * 36 * 3
    assert json.loads((folder / "results.json").read_text())["num_samples"] == 300


def test_same_latents_for_every_solver(tmp_path):
    result = bench(tmp_path, "--nfe", "40", "--metrics", "rmse")
    assert result.exit_code == 0, result.output
    # At 40 NFE every solver is close to the reference solved from the same latents; a solver started from
    # other latents would be off by the spread of the data (about 2).
    for rec in (json.loads(b) for b in records(tmp_path / "run").values()):
        assert rec["value"] < 0.05, rec["label"]
    assert torch.cuda.is_available() or json.loads(next(iter(records(tmp_path / "run").values())))["device"] == "cpu"


def test_output_folder_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["benchmark", *SMALL, "--nfe", "2", "--out", str(blocker / "results")])
    assert result.exit_code == 2 and "cannot create output folder" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_rmse_on_a_subset_scores_the_first_samples(tmp_path):
    """metric_options.rmse.samples = 8 in a 64-sample run scores samples 0-7, which are the samples of an 8-sample
    run (sample i is seeded by (seed, i)); the two agree to float32 rounding of differently sized batches (1e-6
    relative). A non-positive count is refused in one line."""

    def values(name: str, *args: str) -> dict:
        result = bench(tmp_path, "--nfe", "4", "--metrics", "rmse,max_error", "--name", name, *args)
        assert result.exit_code == 0, result.output
        recs = [json.loads(b) for b in records(tmp_path / name).values()]
        assert {r["scored"] for r in recs} == {8 if name != "full" else 64}  # how many samples each value covers
        with open(tmp_path / name / "table.csv") as f:
            samples = {(row["metric"], row["samples"]) for row in csv.DictReader(f)}
        run_size = "8" if name == "small" else "64"
        assert samples == {(m, "8" if name != "full" else "64") for m in ("rmse", "max_error")} | {
            ("samples_per_second", run_size)
        }
        return {(r["metric"], r["label"]): r["value"] for r in recs}

    subset = values("subset", "--set", "metric_options={rmse: {samples: 8}, max_error: {samples: 8}}")
    small = values("small", "--num-samples", "8")
    full = values("full")
    assert subset.keys() == small.keys() and len(subset) == 6
    for key, value in subset.items():
        assert value == pytest.approx(small[key], rel=1e-6), key
    assert any(subset[key] != pytest.approx(full[key], rel=1e-3) for key in subset)
    bad = bench(
        tmp_path, "--nfe", "4", "--metrics", "rmse", "--name", "bad", "--set", "metric_options.rmse={samples: 0}"
    )
    assert bad.exit_code == 2 and "metric_options.rmse.samples must be a positive integer" in bad.output
    assert not (tmp_path / "bad").exists()
