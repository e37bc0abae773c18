"""Damaged files: ours (records, caches, partial points) are recomputed with a warning; a user's file is refused
(issue 21)."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from diffsampler.cli import app
from diffsampler.ems import run as ems_run
from diffsampler.ems.config import EmsConfig
from diffsampler.metrics.ref_stats import reference_statistics

from fid_helpers import StandInNetwork, random_images

runner = CliRunner()
BENCH = [
    "benchmark",
    "--model",
    "gmm-2d",
    "--solvers",
    "euler,heun",
    "--nfe",
    "2",
    "--num-samples",
    "16",
    "--metrics",
    "rmse,pixel_fd",
]
GARBAGE = b'{"garbage'


def values(folder: Path) -> dict[str, float]:
    return {
        str(p.relative_to(folder)): json.loads(p.read_text())["value"]
        for p in sorted((folder / "records").rglob("*.json"))
    }


def warned(caplog, text: str) -> bool:
    return any(r.levelno == logging.WARNING and text in r.getMessage() for r in caplog.records)


def test_a_damaged_benchmark_record_is_recomputed(tmp_path, caplog):
    assert runner.invoke(app, [*BENCH, "--out", str(tmp_path), "--name", "run"]).exit_code == 0
    folder = tmp_path / "run"
    want = values(folder)
    victim = next((folder / "records").rglob("rmse.json"))
    victim.write_bytes(GARBAGE)
    again = runner.invoke(app, [*BENCH, "--out", str(tmp_path), "--name", "run"])
    assert again.exit_code == 0, again.output
    assert "1 cells sampled, 1 reused" in again.output and warned(caplog, "is damaged")
    assert values(folder) == want  # same latents, same code: the recomputed value is bitwise the old one


def test_a_damaged_reference_cache_is_solved_again(tmp_path, caplog):
    assert runner.invoke(app, [*BENCH, "--out", str(tmp_path), "--name", "a"]).exit_code == 0
    (cache,) = (tmp_path / ".cache" / "reference").glob("*.npz")
    cache.write_bytes(cache.read_bytes()[:100])
    again = runner.invoke(app, [*BENCH, "--out", str(tmp_path), "--name", "b"])
    assert again.exit_code == 0, again.output
    assert warned(caplog, "reference-solution cache")
    assert values(tmp_path / "b") == values(tmp_path / "a")
    with np.load(cache) as data:
        assert data["solution"].shape == (16, 2)


def test_a_damaged_compute_ems_point_is_computed_again(tmp_path, monkeypatch, caplog):
    args = dict(model="gmm-2d", data=None, grid=4, num_data=8, batch_size=8, seed=1, device="cpu")
    ems_run.compute_ems(EmsConfig(out=str(tmp_path / "whole"), **args))
    real, done = ems_run.point_record, []

    def stop_after_three(*a, **k):
        if len(done) == 3:
            raise KeyboardInterrupt
        done.append(1)
        return real(*a, **k)

    monkeypatch.setattr(ems_run, "point_record", stop_after_three)
    with pytest.raises(KeyboardInterrupt):
        ems_run.compute_ems(EmsConfig(out=str(tmp_path / "cut"), **args))
    monkeypatch.setattr(ems_run, "point_record", real)
    (tmp_path / "cut.partial" / "point_00001.npy").write_bytes(GARBAGE)
    outcome = ems_run.compute_ems(EmsConfig(out=str(tmp_path / "cut"), **args))
    assert outcome.resumed_points == 2 and warned(caplog, "point_00001.npy is damaged")
    for name, key in (("l.npz", "l"), ("sb.npz", "s"), ("sb.npz", "b")):
        assert np.array_equal(np.load(tmp_path / "whole" / name)[key], np.load(tmp_path / "cut" / name)[key])


def test_a_damaged_partial_run_file_starts_the_partial_run_over(tmp_path, caplog):
    partial = tmp_path / "s.partial"
    partial.mkdir()
    (partial / "run.json").write_bytes(GARBAGE)
    np.save(partial / "point_00000.npy", np.zeros(3))
    ems_run.compute_ems(EmsConfig("gmm-2d", None, 2, 8, 8, 0, "cpu", str(tmp_path / "s")))
    assert warned(caplog, "starts over") and not partial.exists()
    assert np.load(tmp_path / "s" / "l.npz")["l"].shape == (3, 2)


def test_a_damaged_user_statistics_file_is_refused_in_one_line(tmp_path):
    stats = tmp_path / "stats"
    assert (
        runner.invoke(
            app, ["compute-ems", "--model", "gmm-2d", "--set", "grid=8", "--set", "num_data=8", "--out", str(stats)]
        ).exit_code
        == 0
    )
    for damage in (GARBAGE, b"", (stats / "l.npz").read_bytes()[:-40]):
        (stats / "l.npz").write_bytes(damage)
        result = runner.invoke(
            app,
            [
                "sample",
                "--model",
                "gmm-2d",
                "--solver",
                "dpm-solver-v3",
                "--nfe",
                "4",
                "-o",
                f"stats={stats}",
                "--num-samples",
                "4",
                "--out",
                str(tmp_path),
                "--name",
                "s",
            ],
        )
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1 and "l.npz" in result.output and "damaged" in result.output
    assert not (tmp_path / "s").exists()


def test_a_damaged_ref_stats_cache_entry_is_computed_again(tmp_path, caplog):
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    for i, image in enumerate(random_images(6, seed=3, size=16)):
        Image.fromarray(image[..., 0]).save(data / f"{i}.png")
    network = StandInNetwork()
    first = reference_statistics(data, network, tmp_path / "cache", batch_size=4)
    first.path.write_bytes(GARBAGE)
    second = reference_statistics(data, network, tmp_path / "cache", batch_size=4)
    assert not second.cache_hit and network.loads == 2 and warned(caplog, "damaged")
    np.testing.assert_array_equal(second.stats.sigma, first.stats.sigma)
    third = reference_statistics(data, network, tmp_path / "cache", batch_size=4)
    assert third.cache_hit and network.loads == 2
