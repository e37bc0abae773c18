"""Issue 37: nothing of the user's is deleted, absurd sizes are refused at once, every bad input is one line.

Each case runs the real CLI in a subprocess in a temporary folder and checks the exit code, that stderr is one
line, and that the user's files are still there byte for byte; refusals that happen while the config is read run
in-process (``typer``'s runner, the same code path without a new interpreter each time).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from diffsampler.amed.checkpoint import load_predictor
from diffsampler.atomic import MARKER, MAX_NAME_BYTES, atomic_dir, own_files
from diffsampler.cli import app
from diffsampler.config import MAX_NFE
from diffsampler.errors import MESSAGE_LIMIT, UserError, shorten
from diffsampler.schedule_file import ScheduleArtefact, write_schedule

from unet_helpers import write_blob_images

HANG_GUARD_S = 240
"""A subprocess still running after this long counts as a hang (the refusals below take seconds)."""
GMM = ["--model", "gmm-2d", "--device", "cpu"]
SAMPLE = ["sample", *GMM, "--solver", "euler", "--nfe", "3", "--num-samples", "4"]
BENCH = ["benchmark", *GMM, "--solvers", "euler", "--nfe", "2", "--num-samples", "8", "--metrics", "pixel_fd"]
EMS = ["compute-ems", *GMM, "--set", "grid=2", "--set", "num_data=8", "--batch-size", "8"]
AMED = ["train-amed", *GMM, "--set", "student=euler", "--nfe", "3", "--set", "num_latents=16", "--set", "teacher_m=1"]
SEARCH = ["search-schedule", *GMM, "--method", "gits", "--solver", "euler", "--nfe", "3", "--num-samples", "8"]
TRAIN = ["train-model", "--device", "cpu", "--set", "steps=2", "--set", "channels=8", "--set", "channel_mult=[1]"]
TRAIN += ["--set", "attention_resolutions=[]", "--set", "head_channels=8", "--set", "grid_samples=2"]
TRAIN += ["--set", "checkpoint_every=1", "--set", "log_every=1", "--batch-size", "4", "--set", "grid_nfe=4"]


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "PYTHONWARNINGS": "default"}
    return subprocess.run(
        [sys.executable, "-m", "diffsampler", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        env=env,
    )


def ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


def one_line(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit code 2 and exactly one line on stderr (holding ``words``), no traceback or library warning."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def refused(cwd: Path, *args: str) -> str:
    """``one_line`` for a refusal run in-process in ``cwd``: exit code 2 and one line of output."""
    here = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, list(args))
    finally:
        os.chdir(here)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def plant(folder: Path, *sub: str) -> dict[Path, bytes]:
    """A user's files in ``folder``: one at the top, one in a folder of their own, one in each of ``sub``."""
    files = {folder / "notes.txt": b"my notes\n", folder / "mine" / "data.bin": bytes(range(256))}
    files.update({folder / s / "keep.txt": f"kept in {s}\n".encode() for s in sub})
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def unchanged(files: dict[Path, bytes]) -> None:
    for path, data in files.items():
        assert path.is_file() and path.read_bytes() == data, f"{path} of the user was changed or deleted"


# --- 1. a rerun replaces our files only ------------------------------------------------------------------------


def test_sample_rerun_keeps_the_users_files_and_replaces_ours(tmp_path):
    ok(cli(tmp_path, *SAMPLE, "--out", "res", "--name", "run"))
    folder = tmp_path / "res" / "run"
    mine = plant(folder)
    ok(cli(tmp_path, *SAMPLE, "--out", "res", "--name", "run", "--seed", "1"))
    unchanged(mine)
    assert json.loads((folder / "meta.json").read_text())["config"]["seed"] == 1
    assert own_files(folder) == {"meta.json", "samples.npz", "scatter.png"}


def test_benchmark_rerun_and_fresh_keep_the_users_files(tmp_path):
    ok(cli(tmp_path, *BENCH, "--out", "res", "--name", "b"))
    folder = tmp_path / "res" / "b"
    label = next((folder / "records").iterdir()).name
    mine = plant(folder, "records", f"records/{label}", f"records/{label}/nfe002", "grids")
    ok(cli(tmp_path, *BENCH, "--out", "res", "--name", "b", "--set", "solvers=[euler, heun]"))
    unchanged(mine)
    ok(cli(tmp_path, *BENCH, "--out", "res", "--name", "b", "--fresh", "--seed", "3"))
    unchanged(mine)
    assert json.loads((folder / "run.json").read_text())["seed"] == 3
    records = sorted(p.relative_to(folder).as_posix() for p in (folder / "records").rglob("*.json"))
    assert records == [f"records/{label}/nfe002/n8/pixel_fd.json"]  # heun's record of the second run is gone


def test_benchmark_fresh_help_says_what_it_removes(tmp_path):
    text = " ".join(cli(tmp_path, "benchmark", "--help").stdout.split())
    for word in ("run.json", "records", "grids", "table.md", "any other file or folder there is kept"):
        assert word in text


def test_compute_ems_rerun_keeps_the_users_files(tmp_path):
    ok(cli(tmp_path, *EMS, "--out", "stats"))
    mine = plant(tmp_path / "stats")
    ok(cli(tmp_path, *EMS, "--out", "stats", "--seed", "1"))
    unchanged(mine)
    assert json.loads((tmp_path / "stats" / "meta.json").read_text())["seed"] == 1
    assert not (tmp_path / "stats.partial").exists()


def test_train_amed_and_search_schedule_replace_only_their_own_file(tmp_path):
    mine = plant(tmp_path / "out")
    ok(cli(tmp_path, *AMED, "--out", "out", "--name", "p"))
    ok(cli(tmp_path, *AMED, "--out", "out", "--name", "p", "--fresh", "--seed", "1"))
    assert load_predictor(tmp_path / "out" / "p.pt").meta["config"]["seed"] == 1
    ok(cli(tmp_path, *SEARCH, "--out", "out/s.json"))
    ok(cli(tmp_path, *SEARCH, "--out", "out/s.json", "--seed", "2"))
    unchanged(mine)
    (tmp_path / "out" / "notes.pt").write_text("mine")
    one_line(cli(tmp_path, *AMED, "--out", "out", "--name", "notes", "--fresh"), "is left alone")
    assert (tmp_path / "out" / "notes.pt").read_text() == "mine"
    (tmp_path / "out" / "notes.json").write_text("{}")
    one_line(cli(tmp_path, *SEARCH, "--out", "out/notes.json"), "is not a schedule file")
    assert (tmp_path / "out" / "notes.json").read_text() == "{}"


def test_train_model_resume_and_ref_stats_keep_the_users_files(tmp_path):
    data = write_blob_images(tmp_path / "blobs.npz")
    ok(cli(tmp_path, *TRAIN, "--data", data, "--out", "runs", "--name", "t"))
    mine = plant(tmp_path / "runs" / "t", "checkpoints")
    ok(cli(tmp_path, *TRAIN, "--data", data, "--out", "runs", "--name", "t", "--set", "steps=3", "--resume"))
    unchanged(mine)
    images = tmp_path / "imgs.npz"
    np.savez(images, samples=np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1)).astype(np.uint8))
    stats_mine = plant(tmp_path / "st")
    ref = ["ref-stats", "--data", str(images), "--features", "fmnist", "--cache-dir", "cache", "--device", "cpu"]
    ok(cli(tmp_path, *ref, "--out", "st/s.npz"))
    ok(cli(tmp_path, *ref, "--out", "st/s.npz"))
    unchanged(stats_mine)
    one_line(cli(tmp_path, *ref, "--out", "st/notes.txt"), "is not a statistics file")
    unchanged(stats_mine)


def test_a_user_file_where_a_rerun_writes_its_own_is_refused_by_name(tmp_path):
    final = tmp_path / "run"
    with atomic_dir(final, "sample") as tmp:
        (tmp / "a.txt").write_text("ours")
    (final / "b.txt").write_text("user's")
    with pytest.raises(UserError, match=r"holds b.txt of yours where diffsampler sample writes its own"):
        with atomic_dir(final, "sample") as tmp:
            (tmp / "b.txt").write_text("ours")
    assert (final / "b.txt").read_text() == "user's" and own_files(final) == {"a.txt"}


def test_a_folder_marked_before_file_lists_keeps_files_the_rerun_does_not_write(tmp_path):
    final = tmp_path / "run"
    final.mkdir()
    (final / MARKER).write_text(json.dumps({"made_by": "diffsampler", "command": "sample"}))
    (final / "meta.json").write_text("old")
    (final / "notes.txt").write_text("user's")
    with atomic_dir(final, "sample") as tmp:
        (tmp / "meta.json").write_text("new")
    assert (final / "meta.json").read_text() == "new" and (final / "notes.txt").read_text() == "user's"
    assert own_files(final) == {"meta.json"}


# --- 2. limits checked before any work ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, words",
    [
        (["sample", *GMM, "--nfe", "1000000000"], ["nfe is 1,000,000,000", f"limit of {MAX_NFE:,}"]),
        (["benchmark", *GMM, "--nfe", "1-100000000"], ["largest NFE budget is 100,000,000"]),
        (["sample", *GMM, "--num-samples", "1000000000"], ["num_samples is 1,000,000,000"]),
        (["compute-ems", *GMM, "--set", "grid=100000000"], ["grid is 100,000,000"]),
        (["train-amed", *GMM, "--nfe", "99999"], ["nfe is 99,999"]),
        (["search-schedule", *GMM, "--nfe", "99999"], ["nfe is 99,999"]),
        (["sample", *GMM, "--name", "n" * 300], [f"the limit is {MAX_NAME_BYTES} bytes"]),
        (["benchmark", *GMM, "--name", "n" * 300], [f"the limit is {MAX_NAME_BYTES} bytes"]),
    ],
)
def test_absurd_sizes_are_refused_in_one_line_before_any_work(tmp_path, args, words):
    line = refused(tmp_path, *args, "--out", "res")
    assert all(word in line for word in words), line
    assert not (tmp_path / "res").exists()


def test_a_long_sigma_list_is_refused_by_its_length(tmp_path):
    path = tmp_path / "long.json"
    path.write_text(json.dumps({"sigmas": [80.0 - i * 1e-5 for i in range(200_000)]}))
    line = refused(tmp_path, "sample", *GMM, "--schedule", str(path))
    assert "holds 200,000 sigmas" in line and "the limit is 1002" in line


# --- 3. every reader: one line ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, words",
    [(bytes(range(128, 256)) * 4, ["is not UTF-8 text"]), (b"model: gmm-2d\nname: \xff\xfe\n", ["offset 20"])],
)
def test_a_config_that_is_not_utf8_is_one_line(tmp_path, content, words):
    (tmp_path / "bad.yaml").write_bytes(content)
    line = refused(tmp_path, "sample", "--config", "bad.yaml")
    assert all(word in line for word in words), line


def test_huge_values_are_quoted_cut_with_an_ellipsis(tmp_path):
    (tmp_path / "c.yaml").write_text("model_options: " + "x" * 900_000 + "\n")
    line = refused(tmp_path, "sample", *GMM, "--config", "c.yaml")
    assert "…" in line and "(900,002 characters)" in line and len(line) < 400
    assert shorten("y" * 5000).count("y") < 250 and len(shorten("y" * 5000, MESSAGE_LIMIT)) < MESSAGE_LIMIT + 40


def test_a_pickle_is_refused_without_torchs_warning(tmp_path):
    with open(tmp_path / "p.pt", "wb") as f:
        pickle.dump({"a": 1}, f, protocol=4)  # torch warns about the protocol before refusing it
    one_line(cli(tmp_path, "sample", "--model", "p.pt"), "not a diffsampler model checkpoint")
    one_line(cli(tmp_path, *SAMPLE, "--solver", "amed", "-o", "predictor=p.pt"), "not a readable AMED predictor")


def test_an_amed_predictor_is_read_before_its_nfe_parity_is_checked(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    base = ["sample", *GMM, "--solver", "amed", "--nfe", "3"]  # odd NFE without afs: the parity check would refuse
    one_line(cli(tmp_path, *base, "-o", "predictor=bad.pt"), "bad.pt is not a readable AMED predictor")
    one_line(cli(tmp_path, *base, "-o", "predictor=missing.pt"), "AMED predictor file not found: missing.pt")


def test_metric_options_are_checked_before_the_progress_bar(tmp_path):
    assert "metric_options.pixel_fd" in refused(tmp_path, *BENCH, "--set", "metric_options={pixel_fd: {samples: 3}}")
    assert "unknown metric 'bogus'" in refused(tmp_path, *BENCH, "--set", "metric_options={bogus: {}}")
    assert not (tmp_path / "results").exists()


def test_a_missing_statistics_file_is_called_missing(tmp_path):
    ok(cli(tmp_path, *EMS, "--out", "stats"))
    (tmp_path / "stats" / "sb.npz").unlink()
    args = ["sample", *GMM, "--solver", "dpm-solver-v3", "--nfe", "3", "-o", "stats=stats", "--num-samples", "4"]
    line = one_line(cli(tmp_path, *args), "sb.npz is missing")
    assert "damaged" not in line


def _mount_tmpfs(where: Path) -> bool:
    if os.geteuid() != 0:
        return False
    where.mkdir()
    return (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True).returncode
        == 0
    )


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk):
        pytest.skip("mounting a 1 MB tmpfs needs root and mount permission (not available here)")
    try:
        (disk / "filler").write_bytes(b"\0" * 900_000)
        result = cli(tmp_path, "sample", *GMM, "--num-samples", "20000", "--out", str(disk / "res"), "--name", "x")
        one_line(result, "No space left on device")
        assert "Exception ignored" not in result.stderr
        assert list((disk / "res").iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# --- 4. one rule for explicit budgets ---------------------------------------------------------------------------


def test_an_explicit_nfe_a_grid_does_not_cost_is_refused_the_same_way(tmp_path):
    write_schedule(tmp_path / "s.json", ScheduleArtefact([80.0, 10.0, 1.0, 0.002]))
    base = ["sample", *GMM, "--solver", "euler", "--nfe", "5", "--num-samples", "4"]
    a = one_line(cli(tmp_path, *base, "--schedule", "s.json"), "costs euler 3 NFE, not the 5 asked for")
    b = one_line(cli(tmp_path, *base, "--set", "sigmas=[80.0, 10.0, 1.0, 0.002]"), "costs euler 3 NFE")
    assert a.partition(" costs ")[2] == b.partition(" costs ")[2]
    without = cli(tmp_path, "sample", *GMM, "--solver", "euler", "--schedule", "s.json", "--num-samples", "4")
    ok(without)  # the default NFE is no request: the file's grid stands
    assert json.loads(next(tmp_path.glob("results/samples/*/meta.json")).read_text())["nfe"] == 3
    assert (
        torch.tensor(json.loads(next(tmp_path.glob("results/samples/*/meta.json")).read_text())["sigmas"]).numel() == 4
    )
