"""Commands under torchrun (gloo, 2 CPU processes) give the same results as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from diffsampler.distributed import World, batches, my_batches


def torchrun(args: list[str], cwd: Path, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N -m diffsampler ARGS`` on the CPU."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "diffsampler", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def single(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m diffsampler ARGS`` in one process on the CPU."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "diffsampler", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


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
    common = ["sample", "--device", "cpu", "--num-samples", "20", "--batch-size", "6", "--nfe", "6", "--out", str(tmp_path)]
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
