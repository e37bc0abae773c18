"""Property test of the benchmark store: killed at random points of its writes, then resumed, a run equals an
uninterrupted one (issue 21).

A child process runs the benchmark with every atomic-write step of diffsampler.atomic instrumented as a kill
point: before the temporary file is flushed (it is cut to half its length first), before and after the rename.
At the chosen point the child calls ``os._exit`` (no cleanup runs, as under SIGKILL). The points are drawn from a
seeded generator, so a failure is reproducible from the printed point.
"""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from diffsampler.cli import app

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "benchmark",
    "--model",
    "gmm-2d",
    "--solvers",
    "euler,heun",
    "--nfe",
    "2,3",
    "--num-samples",
    "16",
    "--metrics",
    "rmse,pixel_fd",
    "--name",
    "run",
]
TIMINGS = ("sampling_seconds", "samples_per_second")
REPORTS_WITH_TIMINGS = {"table.md", "table.csv", "results.json", "report.html"}
"""Reports that show the cells' sampling times (report.html: the throughput table and the _vs_time plots)."""
TIMING_PLOT_SUFFIX = "_vs_time.png"
"""Plots whose x axis is each cell's sampling time (they differ between any two runs)."""
CHILD = r"""
import os, sys
kill_at, points = int(sys.argv[1]), [0]

def point():
    points[0] += 1
    if points[0] == kill_at:
        os._exit(137)

real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

def fsync(fd):
    points[0] += 1
    if points[0] == kill_at:
        os.ftruncate(fd, os.fstat(fd).st_size // 2)
        os._exit(137)
    real_fsync(fd)

def replace(src, dst):
    point()
    real_replace(src, dst)
    point()

os.fsync, os.replace = fsync, replace
from diffsampler.cli import app
app(sys.argv[2:], prog_name="diffsampler")
"""


def run_child(kill_at: int, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(kill_at), *ARGS, "--out", str(out)], env=env, capture_output=True, text=True
    )


def snapshot(out: Path) -> tuple[list[str], dict[str, object]]:
    """Every file's name, and the content of those without timings (records compared without their timings)."""
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    contents: dict[str, object] = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        name = str(path.relative_to(out))
        if path.name in REPORTS_WITH_TIMINGS or path.name.endswith(TIMING_PLOT_SUFFIX):
            continue
        if "records" in path.parts:
            contents[name] = {k: v for k, v in json.loads(path.read_text()).items() if k not in TIMINGS}
        else:
            contents[name] = path.read_bytes()
    return names, contents


def count_kill_points(out: Path, monkeypatch) -> int:
    """Run the benchmark uninterrupted in this process, counting the child's kill points (same instrumentation)."""
    count = [0]
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        count[0] += 1
        real_fsync(fd)

    def replace(src, dst):
        count[0] += 2
        real_replace(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", fsync)
        patch.setattr(os, "replace", replace)
        result = runner.invoke(app, [*ARGS, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return count[0]


def test_random_kill_points_then_resume_equal_an_uninterrupted_run(tmp_path, monkeypatch):
    total = count_kill_points(tmp_path / "whole", monkeypatch)
    assert total >= 30, "every record, grid, cache and report write is a kill point"
    want = snapshot(tmp_path / "whole")
    assert any("records" in n for n in want[1])
    rng = random.Random(21)
    for kill_at in sorted(rng.sample(range(1, total + 1), 5)):
        out = tmp_path / f"killed-{kill_at}"
        killed = run_child(kill_at, out)
        assert killed.returncode == 137, f"kill point {kill_at} of {total} was not reached: {killed.stderr}"
        resumed = runner.invoke(app, [*ARGS, "--out", str(out)])
        assert resumed.exit_code == 0, f"kill point {kill_at}: {resumed.output}"
        assert snapshot(out) == want, f"kill point {kill_at} of {total}"


runner = CliRunner()
