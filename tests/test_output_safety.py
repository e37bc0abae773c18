"""Outputs never remove what the toolbox did not write; names are single path components (issue 21)."""

import errno
import json
import logging
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from diffsampler import sample_run
from diffsampler.amed import train as amed_train
from diffsampler.bench import runner as runner_module
from diffsampler.cli import app
from diffsampler.data.datasets import load_images
from diffsampler.ems import run as ems_run
from diffsampler.errors import UserError
from diffsampler.metrics import ref_stats
from diffsampler.metrics.scoring import score_samples

from fid_helpers import StandInNetwork

runner = CliRunner()
SAMPLE = ["sample", "--model", "gmm-2d", "--solver", "euler", "--nfe", "3", "--num-samples", "4"]
EMS = ["compute-ems", "--model", "gmm-2d", "--set", "grid=2", "--set", "num_data=8", "--batch-size", "8"]
BENCH = [
    "benchmark",
    "--model",
    "gmm-2d",
    "--solvers",
    "euler",
    "--nfe",
    "2",
    "--num-samples",
    "8",
    "--metrics",
    "pixel_fd",
]


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


def dead_pid() -> int:
    """The id of a process that has exited (so its temporaries are stale)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_a_killed_sample_are_removed_and_nothing_else(tmp_path):
    pid = dead_pid()
    stale = [tmp_path / f".run.tmp-{pid}-abc123", tmp_path / f".run.old-{pid}"]
    for folder in stale:
        folder.mkdir()
        (folder / "samples.npz").write_bytes(b"")
    keep = [tmp_path / ".run.notes", tmp_path / f".run.tmp-{os.getppid()}-live", tmp_path / f".other.tmp-{pid}-x"]
    for folder in keep:
        folder.mkdir()
    result = runner.invoke(app, [*SAMPLE, "--out", str(tmp_path), "--name", "run"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([p.name for p in keep] + ["run"])


def test_outputs_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        assert runner.invoke(app, [*SAMPLE, "--out", str(tmp_path), "--name", "s"]).exit_code == 0
        assert runner.invoke(app, [*BENCH, "--out", str(tmp_path), "--name", "b"]).exit_code == 0
    finally:
        os.umask(old)
    paths = [p for p in tmp_path.rglob("*") if not p.is_symlink()]
    assert len(paths) > 10
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path


def test_a_full_disk_during_sample_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sample_run.np, "savez", full)
    result = runner.invoke(app, [*SAMPLE, "--out", str(tmp_path / "out"), "--name", "run"])
    one_line_exit_2(result, "No space left on device", "run")
    assert list((tmp_path / "out").iterdir()) == []


def test_zero_batch_size_is_refused(tmp_path):
    one_line_exit_2(
        runner.invoke(app, ["ref-stats", "--data", str(tmp_path), "--batch-size", "0"]),
        "--batch-size must be at least 1",
    )
    images = tmp_path / "s.npz"
    np.savez(images, samples=np.zeros((4, 1, 8, 8), np.float32))
    with pytest.raises(UserError, match="--batch-size must be at least 1"):
        score_samples(str(images), str(images), StandInNetwork(), torch.device("cpu"), batch_size=0)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((4, 1, 8, 8), np.complex64), "dtype complex64"),
        (np.full((4, 8, 8, 1), 300, np.int64), "from 300 to 300"),
        (np.full((4, 8, 8, 1), -1, np.int16), "from -1 to -1"),
        (np.zeros((4, 8, 8, 1), bool), "dtype bool"),
    ],
)
def test_samples_npz_of_complex_or_out_of_range_integers_is_refused(tmp_path, array, message):
    np.savez(tmp_path / "s.npz", samples=array)
    with pytest.raises(UserError, match=message):
        load_images(tmp_path / "s.npz")


def test_integer_pixels_in_range_load_as_uint8(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1))
    np.savez(tmp_path / "s.npz", samples=pixels)
    assert np.array_equal(load_images(tmp_path / "s.npz"), pixels.astype(np.uint8))


def test_ctrl_c_in_benchmark_says_where_and_the_same_command_resumes(tmp_path, monkeypatch):
    args = [*BENCH, "--solvers", "euler,heun,dpm2", "--out", str(tmp_path), "--name", "run"]
    real, calls = runner_module.generate_sharded, []

    def interrupt_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(runner_module, "generate_sharded", interrupt_third)
    result = runner.invoke(app, args)
    assert result.exit_code == 130, result.output
    assert (
        "stopped at dpm2 @ NFE 2 with 2 of 3 cells done" in result.output
        and "run the same command to resume" in result.output
    )
    monkeypatch.setattr(runner_module, "generate_sharded", real)
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "1 cells sampled, 2 reused" in again.output


def test_ctrl_c_in_compute_ems_says_how_far_it_got(tmp_path, monkeypatch):
    real, calls = ems_run.point_record, []

    def interrupt_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ems_run, "point_record", interrupt_third)
    result = runner.invoke(app, [*EMS, "--set", "grid=4", "--out", str(tmp_path / "e")])
    assert result.exit_code == 130 and "2 of 5 grid points done" in result.output and "same command" in result.output


def test_train_amed_and_ref_stats_check_the_output_before_the_work(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")

    def no_work(*a, **k):
        raise AssertionError("the work started before the output was checked")

    monkeypatch.setattr(amed_train, "train_amed", no_work)
    monkeypatch.setattr(ref_stats, "reference_statistics", no_work)
    one_line_exit_2(
        runner.invoke(app, ["train-amed", "--model", "gmm-2d", "--nfe", "3", "--out", str(blocker / "sub")]),
        "not a folder",
    )
    data = tmp_path / "data.npz"
    np.savez(data, samples=np.zeros((4, 8, 8, 1), np.uint8))
    one_line_exit_2(
        runner.invoke(
            app, ["ref-stats", "--data", str(data), "--inception", str(data), "--out", str(blocker / "s.npz")]
        ),
        "not a folder",
    )


def test_ref_stats_warns_up_front_when_it_will_be_long(monkeypatch, caplog):
    clock = iter(range(100))
    monkeypatch.setattr(ref_stats.time, "perf_counter", lambda: float(next(clock)))
    seen = []
    slow = ref_stats._TimeEstimate(60000, "cpu", seen.append, "float32")  # 32 images a second: about half an hour
    for _ in range(5):
        slow(32)
    quick = ref_stats._TimeEstimate(200, "cpu", None, "float32")
    for _ in range(5):
        quick(32)
    already_bf16 = ref_stats._TimeEstimate(60000, "cpu", None, "bfloat16")
    for _ in range(5):
        already_bf16(32)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert seen == [32] * 5 and len(warnings) == 2
    assert "60000 images will take about 31 min at 32 images/s on cpu" in warnings[0] and "--device cuda" in warnings[0]
    assert "fd_fmnist" in warnings[0] and "--precision bfloat16" in warnings[0]
    assert "--precision" not in warnings[1]  # no advice to use what is already in use


def test_downloaded_weights_respect_the_umask_and_a_failed_download_leaves_nothing(tmp_path):
    from diffsampler.metrics.inception import download_weights

    source = tmp_path / "source.pt"
    source.write_bytes(b"weights" * 1000)
    cache = tmp_path / "cache"
    cache.mkdir()
    old = os.umask(0o022)
    try:
        dest = download_weights(cache / "w.pt", source.as_uri())
    finally:
        os.umask(old)
    assert dest.read_bytes() == source.read_bytes() and stat.S_IMODE(dest.stat().st_mode) == 0o644
    with pytest.raises(UserError, match="downloading the FID Inception weights failed"):
        download_weights(cache / "x.pt", (tmp_path / "missing.pt").as_uri())
    assert [p.name for p in cache.iterdir()] == ["w.pt"]
