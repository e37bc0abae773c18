"""Commands under torchrun (gloo, 2 CPU processes) give the same results as one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from diffsampler.distributed import World, batches, current, my_batches


def torchrun(args: list[str], cwd: Path, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N -m diffsampler ARGS`` on the CPU."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "diffsampler",
        *args,
    ]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def single(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m diffsampler ARGS`` in one process on the CPU."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "diffsampler", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_batches_are_dealt_round_robin_and_cover_every_index():
    indices = range(3, 40)
    worlds = [World(r, 3) for r in range(3)]
    dealt = [my_batches(indices, 8, w) for w in worlds]
    assert dealt[0] == [range(3, 11), range(27, 35)]
    assert dealt[1] == [range(11, 19), range(35, 40)]
    assert dealt[2] == [range(19, 27)]
    covered = sorted(i for mine in dealt for b in mine for i in b)
    assert covered == list(indices)
    assert my_batches(indices, 8, World()) == batches(indices, 8)


def test_sample_under_torchrun_equals_one_process(tmp_path):
    common = [
        "sample",
        "--device",
        "cpu",
        "--num-samples",
        "20",
        "--batch-size",
        "6",
        "--nfe",
        "6",
        "--out",
        str(tmp_path),
    ]
    one = single([*common, "--name", "one"], tmp_path)
    assert one.returncode == 0, one.stderr
    two = torchrun([*common, "--name", "two"], tmp_path)
    assert two.returncode == 0, two.stderr
    a = np.load(tmp_path / "one" / "samples.npz")
    b = np.load(tmp_path / "two" / "samples.npz")
    # Each batch has the same composition on 1 or 2 processes, so the samples are bitwise equal.
    np.testing.assert_array_equal(a["samples"], b["samples"])
    np.testing.assert_array_equal(a["indices"], b["indices"])
    assert json.loads((tmp_path / "two" / "meta.json").read_text())["world_size"] == 2
    assert two.stdout.count("20 samples of") == 1, "only rank 0 reports"


BENCH = ["benchmark", "--device", "cpu", "--model", "gmm-2d", "--solvers", "euler,heun,dpmpp", "--batch-size", "16"]


def record_files(run: Path) -> dict[str, dict]:
    """Every record of a benchmark run folder, keyed by its path inside ``records/``."""
    return {
        str(p.relative_to(run / "records")): json.loads(p.read_text())
        for p in sorted((run / "records").rglob("*.json"))
    }


def test_benchmark_under_torchrun_equals_one_process(tmp_path):
    common = [*BENCH, "--nfe", "4,5", "--num-samples", "40", "--out", str(tmp_path)]
    one = single([*common, "--name", "one"], tmp_path)
    assert one.returncode == 0, one.stderr
    two = torchrun([*common, "--name", "two"], tmp_path)
    assert two.returncode == 0, two.stderr
    a, b = record_files(tmp_path / "one"), record_files(tmp_path / "two")
    assert a.keys() == b.keys() and len(a) == 6 * 3
    for key in a:
        # Same batches on 1 or 2 processes: the metric values and grids are identical, not just close.
        assert a[key]["value"] == b[key]["value"], key
        assert a[key]["sigmas"] == b[key]["sigmas"], key
        assert (a[key]["world_size"], b[key]["world_size"]) == (1, 2)
    for png in (tmp_path / "one" / "grids").rglob("*.png"):
        assert (
            png.read_bytes() == (tmp_path / "two" / "grids" / png.relative_to(tmp_path / "one" / "grids")).read_bytes()
        )


def _children(pid: int) -> list[int]:
    """Child process ids of ``pid`` (Linux /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def test_rank_killed_mid_run_fails_the_run_and_the_store_resumes(tmp_path):
    args = [*BENCH, "--nfe", "1-12", "--num-samples", "160", "--out", str(tmp_path), "--name", "run"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "diffsampler",
        *args,
    ]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    records = tmp_path / "run" / "records"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(records.rglob("*.json"))) >= 6:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the benchmark finished before a rank could be killed; give it more cells"
        workers = _children(proc.pid)
        assert len(workers) == 2, workers
        os.kill(workers[1], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, "a killed rank must fail the whole run"
    partial = record_files(tmp_path / "run")
    assert 6 <= len(partial) < 36 * 3
    again = torchrun(args, tmp_path)
    assert again.returncode == 0, again.stderr
    done = record_files(tmp_path / "run")
    assert len(done) == 36 * 3
    for key, record in partial.items():
        assert done[key] == record, f"finished record {key} changed on resume"


def _feature_worker(rank: int, size: int, store: str, images: torch.Tensor, out: str) -> None:
    """One gloo rank: statistics of a fixed linear 'extractor' over the shared batches."""
    import torch.distributed as dist

    from diffsampler.metrics.fid import batch_statistics

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=size)
    try:
        extractor = torch.nn.Linear(images[0].numel(), 8).double()
        torch.nn.init.normal_(extractor.weight, generator=torch.Generator().manual_seed(1))
        torch.nn.init.zeros_(extractor.bias)
        feats = lambda batch: extractor(batch.reshape(batch.shape[0], -1).double())  # noqa: E731
        batches = [images[i : i + 7] for i in range(0, len(images), 7)]
        stats = batch_statistics(feats, batches, world=current())
        if rank == 0:
            np.savez(out, mu=stats.mu, sigma=stats.sigma, n=stats.num_images)
    finally:
        dist.destroy_process_group()


def test_feature_moments_merged_across_ranks_equal_one_process(tmp_path):
    images = torch.randint(0, 256, (45, 1, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    for size in (1, 3):
        torch.multiprocessing.spawn(
            _feature_worker,
            args=(size, str(tmp_path / f"store{size}"), images, str(tmp_path / f"w{size}.npz")),
            nprocs=size,
        )
    one, three = np.load(tmp_path / "w1.npz"), np.load(tmp_path / "w3.npz")
    assert int(one["n"]) == int(three["n"]) == 45
    # Chan's merge differs from one pass only by float64 rounding: relative 1e-10 is far inside FID's 1e-6.
    np.testing.assert_allclose(three["mu"], one["mu"], rtol=1e-10)
    np.testing.assert_allclose(three["sigma"], one["sigma"], rtol=1e-10, atol=1e-10 * np.abs(one["sigma"]).max())


def test_compute_ems_under_torchrun_equals_one_process(tmp_path):
    common = [
        "compute-ems",
        "--device",
        "cpu",
        "--model",
        "gmm-2d",
        "--set",
        "grid=12",
        "--set",
        "num_data=100",
        "--batch-size",
        "16",
    ]
    one = single([*common, "--out", str(tmp_path / "one")], tmp_path)
    assert one.returncode == 0, one.stderr
    two = torchrun([*common, "--out", str(tmp_path / "two")], tmp_path)
    assert two.returncode == 0, two.stderr
    for name in ("l.npz", "sb.npz"):
        a, b = np.load(tmp_path / "one" / name), np.load(tmp_path / "two" / name)
        for key in a.files:
            # The issue allows 1e-10 relative; batches see the same noise and are folded in the same order,
            # so the statistics come out equal to the last bit on one machine.
            np.testing.assert_allclose(b[key], a[key], rtol=1e-10, atol=0)
    meta = json.loads((tmp_path / "two" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["jvp_calls"] == 13 * 2 * 7


def test_train_amed_under_torchrun_sums_gradients(tmp_path):
    import torch as th

    common = [
        "train-amed",
        "--device",
        "cpu",
        "--model",
        "gmm-2d",
        "--set",
        "student=amed",
        "--nfe",
        "3",
        "--set",
        "afs=true",
        "--set",
        "num_latents=96",
        "--batch-size",
        "32",
        "--name",
        "p",
    ]
    one = single([*common, "--out", str(tmp_path / "one")], tmp_path)
    assert one.returncode == 0, one.stderr
    two = torchrun([*common, "--out", str(tmp_path / "two")], tmp_path)
    assert two.returncode == 0, two.stderr
    a = th.load(tmp_path / "one" / "p.pt", weights_only=True)
    b = th.load(tmp_path / "two" / "p.pt", weights_only=True)
    sa, sb = a["state_dict"], b["state_dict"]
    assert sa.keys() == sb.keys()
    for key in sa:
        # Half-batch gradients summed across ranks equal the full-batch gradient up to float32 summation
        # order; after 6 Adam steps that leaves differences far below 1e-4 of the weights' scale.
        th.testing.assert_close(sb[key], sa[key], rtol=1e-4, atol=1e-5)
    assert b["meta"]["world_size"] == 2
