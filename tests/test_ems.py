"""Empirical model statistics: the estimator against closed forms, streaming moments, the file format,
refusal of mismatched statistics, and `diffsampler compute-ems` (resumable) end to end."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from diffsampler.cli import app
from diffsampler.ems import run as ems_run
from diffsampler.ems.config import EmsConfig
from diffsampler.ems.estimate import (
    lambda_grid,
    point_generator,
    point_record,
    smoothed_derivative,
    statistics_from_records,
)
from diffsampler.ems.format import load_statistics, prepare_statistics, write_statistics
from diffsampler.ems.moments import StreamingMoments
from diffsampler.errors import UserError
from diffsampler.models import Denoiser, load_model
from diffsampler.solvers.dpm_solver_v3 import EmpiricalStatistics

from helpers import SIGMA_MAX, SIGMA_MIN, single_gaussian

runner = CliRunner()
CPU = torch.device("cpu")


class CorrelatedGaussian(Denoiser):
    """Exact denoiser of N(mu, Sigma) with a full covariance: D = mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu)."""

    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        a = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
        cov = a @ a.T / dim + 0.05 * torch.eye(dim, dtype=torch.float64)
        self.eig, self.q = torch.linalg.eigh(cov)
        self.mu = torch.linspace(-0.5, 0.5, dim, dtype=torch.float64)
        self.sample_shape = (dim,)

    def jacobian(self, sigma: float) -> torch.Tensor:
        return self.q @ torch.diag(self.eig / (self.eig + sigma**2)) @ self.q.T

    def denoise(self, x, sigma, cond=None):
        gain = self.eig[None] / (self.eig[None] + sigma[:, None] ** 2)
        y = ((x.to(torch.float64) - self.mu) @ self.q) * gain
        return (self.mu + y @ self.q.T).to(x.dtype)


def test_streaming_moments_equal_one_shot_moments():
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(3, 50, 4, generator=gen, dtype=torch.float64) * 3 + 7
    pairs = ((0, 0), (0, 1), (1, 2), (2, 2))
    for batch in (1, 7, 50):
        m = StreamingMoments(3, pairs)
        for start in range(0, 50, batch):
            m.update(values[:, start : start + batch])
        centred = values - values.mean(dim=1, keepdim=True)
        expected = torch.stack([(centred[i] * centred[j]).mean(dim=0) for i, j in pairs])
        assert torch.allclose(m.mean, values.mean(dim=1), rtol=0, atol=1e-12)
        assert torch.allclose(m.covariances(), expected, rtol=0, atol=1e-11)


def test_hutchinson_l_converges_within_monte_carlo_error():
    # l = 1 - diag(J); one Rademacher probe per data point has per-element variance sum_{j != i} J_ij^2,
    # so the mean over K points has standard error sqrt(that / K). Checked at 5 standard errors.
    model = CorrelatedGaussian()
    sigma = 0.8
    jac = model.jacobian(sigma)
    exact = 1 - torch.diagonal(jac)
    off = (jac**2).sum(dim=1) - torch.diagonal(jac) ** 2
    errors = []
    for k in (64, 1024):
        data = torch.zeros(k, 6, dtype=torch.float64)
        record = point_record(model, data, sigma, point_generator(0, 0), 256, CPU)
        err = (record[0] - exact).abs()
        assert (err <= 5 * torch.sqrt(off / k)).all()
        errors.append(err.pow(2).mean().sqrt().item())
    assert errors[1] < errors[0] / 2  # 16x the data points: sqrt(16) = 4x smaller in expectation


def test_isotropic_gaussian_statistics_match_closed_form():
    # Diagonal Jacobian: the Hutchinson estimate of l is exact. f = -l mu is then deterministic up to rounding, so
    # s = 0 up to rounding divided by the ridge (<1e-3, against physical values of order 1), and
    # b = -l' mu is exact up to the finite differences and smoothing of l' (<1% here with N = 120).
    model = single_gaussian(4)
    n = 120
    lambdas = lambda_grid(SIGMA_MIN, SIGMA_MAX, n)
    data = model.means[0] + 0.5 * torch.randn(32, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    records = np.stack(
        [
            point_record(model, data, math.exp(-lam), point_generator(0, j), 32, CPU).numpy()
            for j, lam in enumerate(lambdas)
        ]
    )
    est = statistics_from_records(records, lambdas)
    e2 = 0.25 * np.exp(2 * lambdas)[:, None]
    mu = model.means[0].numpy()[None]
    assert np.allclose(est["l"], 1 / (1 + e2), rtol=0, atol=1e-9)
    assert np.abs(est["s"]).max() < 1e-3
    exact_b = 2 * mu * e2 / (1 + e2) ** 2
    assert np.abs(est["b"] - exact_b).max() < 0.01 * np.abs(exact_b).max()


def test_smoothed_derivative_is_exact_for_quadratics():
    lam = np.linspace(-4.0, 6.0, 41)
    values = (3 * lam**2 - lam + 2)[:, None] * np.array([1.0, -2.0])
    for width in (0.0, 0.5, 1.0):
        assert np.allclose(
            smoothed_derivative(values, lam, width), (6 * lam - 1)[:, None] * np.array([1.0, -2.0]), atol=1e-9
        )


def test_scale_and_bias_are_the_least_squares_fit_of_f_prime_on_f():
    # Records built from samples of (a, p, q); s and b must equal the per-element LS fit f' ~ s f + b.
    gen = torch.Generator().manual_seed(0)
    n, k = 4, 2000
    lambdas = np.linspace(0.0, 1.0, n + 1)
    l_true = np.linspace(0.2, 0.8, n + 1)[:, None] * np.ones((1, 3))
    records, samples = [], []
    for j in range(n + 1):
        a = torch.randn(k, 3, generator=gen, dtype=torch.float64)
        p = 0.5 * a + torch.randn(k, 3, generator=gen, dtype=torch.float64)
        q = -a + 0.3 * p**2
        v = torch.stack([a, p, q])
        mean = v.mean(dim=1)
        c = v - mean[:, None]
        cov = torch.stack([(c[i] * c[jj]).mean(dim=0) for i, jj in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2))])
        records.append(torch.cat([torch.as_tensor(l_true[j])[None], mean, cov]).numpy())
        samples.append((a.numpy(), p.numpy(), q.numpy()))
    est = statistics_from_records(np.stack(records), lambdas, ridge=0.0)
    for j, (a, p, q) in enumerate(samples):
        l, l_d = l_true[j], est["l_d"][j]
        f = p - l * a
        fd = l * p - q - l_d * a
        for e in range(3):
            slope, intercept = np.polyfit(f[:, e], fd[:, e], 1)
            assert est["s"][j, e] == pytest.approx(slope, rel=1e-9)
            assert est["b"][j, e] == pytest.approx(intercept, rel=1e-9, abs=1e-12)


def _stats_folder(
    tmp_path: Path, shape=(2,), n=4, meta=True, sha="abc", sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX
) -> Path:
    folder = tmp_path / "stats"
    folder.mkdir()
    gen = np.random.default_rng(0)
    l, s, b = (gen.standard_normal((n + 1, *shape)) for _ in range(3))
    write_statistics(folder, l, s, b, {"model": {"sha256": sha}, "sigma_min": sigma_min, "sigma_max": sigma_max})
    if not meta:
        (folder / "meta.json").unlink()
    return folder


def test_format_round_trip_in_the_authors_layout(tmp_path):
    folder = _stats_folder(tmp_path, shape=(3, 4, 4))
    with np.load(folder / "l.npz") as f:
        assert f.files == ["l"] and f["l"].dtype == np.float64 and f["l"].shape == (5, 3, 4, 4)
    with np.load(folder / "sb.npz") as f:
        assert sorted(f.files) == ["b", "s"] and f["s"].shape == f["b"].shape == (5, 3, 4, 4)
    stats = load_statistics(folder)
    assert stats.num_intervals == 4 and stats.sample_shape == (3, 4, 4) and stats.model_sha256 == "abc"
    assert np.array_equal(stats.l.numpy(), np.load(folder / "l.npz")["l"])
    assert (stats.sigma_min, stats.sigma_max) == (SIGMA_MIN, SIGMA_MAX)


def test_files_without_metadata_need_the_stated_sigma_range(tmp_path):
    folder = _stats_folder(tmp_path, meta=False)
    with pytest.raises(UserError, match="stats_sigma_min=.*stats_sigma_max="):
        load_statistics(folder)
    stats = load_statistics(folder, 0.002, 80.0)
    assert stats.model_sha256 is None and stats.sigma_max == 80.0


def test_stated_range_must_agree_with_metadata(tmp_path):
    folder = _stats_folder(tmp_path)
    with pytest.raises(UserError, match="differs from the range"):
        load_statistics(folder, 0.01, 80.0)


def _context(sha="abc", shape=(2,), sigmas=(SIGMA_MAX, 1.0, SIGMA_MIN)):
    return {
        "model": {"sha256": sha, "sample_shape": list(shape)},
        "sigmas": list(sigmas),
        "nfe": 2,
        "schedule": "logsnr",
    }


def test_prepare_loads_and_accepts_matching_statistics(tmp_path):
    folder = _stats_folder(tmp_path)
    options = prepare_statistics({"stats": str(folder)}, _context())
    assert isinstance(options["stats"], EmpiricalStatistics)


@pytest.mark.parametrize(
    "context, message",
    [
        (_context(sha="other"), "made for another model"),
        (_context(shape=(3,)), "do not fit this model's samples"),
        (
            _context(sigmas=(40.0, 1.0, SIGMA_MIN)),
            "statistics cover sigma 0.002 to 80 but the sampling grid runs 0.002 to 40",
        ),
    ],
)
def test_mismatched_statistics_are_refused_in_one_line(tmp_path, context, message):
    folder = _stats_folder(tmp_path)
    with pytest.raises(UserError, match=message) as info:
        prepare_statistics({"stats": str(folder)}, context)
    assert "\n" not in str(info.value)


def _sample_v3(tmp_path: Path, stats: Path, *extra: str):
    args = [
        "sample",
        "--model",
        "gmm-2d",
        "--solver",
        "dpm-solver-v3",
        "--nfe",
        "3",
        "--num-samples",
        "2",
        "-o",
        f"stats={stats}",
    ]
    return runner.invoke(app, [*args, *extra, "--out", str(tmp_path / "samples")])


@pytest.mark.parametrize(
    "case, message",
    [
        ("model", "made for another model"),
        ("shape", "statistics of shape [3] do not fit this model's samples of shape [2]"),
        ("range", "statistics cover sigma 0.002 to 80 but the sampling grid runs 0.002 to 40"),
        ("no-range", "has no meta.json, so its sigma range is unknown"),
    ],
)
def test_sample_cli_refuses_mismatched_statistics_with_one_line_and_exit_2(tmp_path, case, message):
    sha = load_model("gmm-2d").describe()["sha256"]
    folder = _stats_folder(
        tmp_path,
        shape=(3,) if case == "shape" else (2,),
        n=8,
        sha="0" * 64 if case == "model" else sha,
        meta=case == "model" or case == "range",
    )
    extra = {
        "shape": ("-o", "stats_sigma_min=0.002", "-o", "stats_sigma_max=80"),
        "range": ("--set", "sigma_max=40"),
    }.get(case, ())
    result = _sample_v3(tmp_path, folder, *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.strip().count("\n") == 0
    assert not (tmp_path / "samples").exists()


def test_sample_cli_accepts_matching_statistics_and_counts_nfe(tmp_path):
    sha = load_model("gmm-2d").describe()["sha256"]
    folder = _stats_folder(tmp_path, n=8, sha=sha)
    result = _sample_v3(tmp_path, folder)
    assert result.exit_code == 0, result.output
    meta = json.loads(next((tmp_path / "samples").glob("*/meta.json")).read_text())
    assert meta["nfe"] == 3


def test_compute_ems_cli_writes_statistics_and_sample_uses_them(tmp_path):
    out = tmp_path / "ems"
    result = runner.invoke(
        app,
        [
            "compute-ems",
            "--model",
            "gmm-2d",
            "--set",
            "grid=30",
            "--set",
            "num_data=16",
            "--batch-size",
            "16",
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [".diffsampler", "l.npz", "meta.json", "sb.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ems"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["model"]["sha256"] == load_model("gmm-2d").describe()["sha256"]
    assert (meta["grid"], meta["num_data"], meta["sigma_min"], meta["sigma_max"]) == (30, 16, 0.002, 80.0)
    assert meta["jvp_calls"] == 31 * 2
    assert meta["usable"] is True
    assert np.load(out / "l.npz")["l"].shape == (31, 2)
    ok = runner.invoke(
        app,
        [
            "sample",
            "--model",
            "gmm-2d",
            "--solver",
            "dpm-solver-v3",
            "--nfe",
            "5",
            "-o",
            f"stats={out}",
            "--num-samples",
            "4",
            "--out",
            str(tmp_path / "s"),
        ],
    )
    assert ok.exit_code == 0, ok.output
    wrong = runner.invoke(
        app,
        [
            "sample",
            "--model",
            "gmm-fmnist",
            "--solver",
            "dpm-solver-v3",
            "--nfe",
            "5",
            "-o",
            f"stats={out}",
            "--out",
            str(tmp_path / "s"),
        ],
    )
    assert wrong.exit_code == 2 and "another model" in wrong.output


def test_compute_ems_resumes_per_grid_point_and_reproduces_an_uninterrupted_run(tmp_path, monkeypatch):
    args = dict(model="gmm-2d", data=None, grid=5, num_data=12, batch_size=5, seed=3, device="cpu")
    ems_run.compute_ems(EmsConfig(out=str(tmp_path / "whole"), **args))
    real = ems_run.point_record
    done = []

    def failing(*a, **k):
        if len(done) == 3:
            raise KeyboardInterrupt
        done.append(1)
        return real(*a, **k)

    monkeypatch.setattr(ems_run, "point_record", failing)
    with pytest.raises(KeyboardInterrupt):
        ems_run.compute_ems(EmsConfig(out=str(tmp_path / "cut"), **args))
    assert not (tmp_path / "cut").exists()
    assert len(list((tmp_path / "cut.partial").glob("point_*.npy"))) == 3
    monkeypatch.setattr(ems_run, "point_record", real)
    outcome = ems_run.compute_ems(EmsConfig(out=str(tmp_path / "cut"), **args))
    assert outcome.resumed_points == 3 and not (tmp_path / "cut.partial").exists()
    for name, key in (("l.npz", "l"), ("sb.npz", "s"), ("sb.npz", "b")):
        assert np.array_equal(np.load(tmp_path / "whole" / name)[key], np.load(tmp_path / "cut" / name)[key])
    with pytest.raises(UserError, match="unfinished run with other settings"):
        (tmp_path / "other.partial").mkdir()
        (tmp_path / "other.partial" / "run.json").write_text("{}")
        ems_run.compute_ems(EmsConfig(out=str(tmp_path / "other"), **args))


def test_compute_ems_rejects_bad_input():
    with pytest.raises(UserError, match="grid must be at least 2"):
        ems_run.compute_ems(EmsConfig("gmm-2d", grid=1))
    with pytest.raises(UserError, match="unknown model"):
        ems_run.compute_ems(EmsConfig("nope"))
    with pytest.raises(UserError, match="unknown device 'gpu'"):
        ems_run.compute_ems(EmsConfig("gmm-2d", device="gpu"))


def test_compute_ems_from_image_data_checks_size(tmp_path):
    images = (np.random.default_rng(0).random((6, 8, 8, 1)) * 255).astype(np.uint8)
    np.savez(tmp_path / "d.npz", images=images)
    with pytest.raises(UserError, match="exceeds the 6 images"):
        ems_run.compute_ems(
            EmsConfig(
                "gmm-fmnist", data=str(tmp_path / "d.npz"), grid=2, num_data=8, out=str(tmp_path / "o"), device="cpu"
            )
        )
    with pytest.raises(UserError, match=r"have shape \(1, 8, 8\) but the model takes \(1, 32, 32\)"):
        ems_run.compute_ems(
            EmsConfig(
                "gmm-fmnist", data=str(tmp_path / "d.npz"), grid=2, num_data=4, out=str(tmp_path / "o"), device="cpu"
            )
        )


def test_statistics_whose_integrals_overflow_are_refused_in_one_line(tmp_path):
    # |s| of 1000 over a lambda span of 10.6 makes e^S overflow float64: the solver must refuse, not return NaN,
    # and compute-ems must flag such statistics in its metadata.
    n = 20
    big = {"l": np.ones((n + 1, 2)), "s": np.full((n + 1, 2), 1000.0), "b": np.zeros((n + 1, 2))}
    assert "overflow" in ems_run.unusable_reason(big, SIGMA_MIN, SIGMA_MAX)
    assert ems_run.unusable_reason({**big, "s": np.zeros((n + 1, 2))}, SIGMA_MIN, SIGMA_MAX) == ""
    folder = tmp_path / "stats"
    folder.mkdir()
    write_statistics(folder, big["l"], big["s"], big["b"], {"sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX})
    result = _sample_v3(tmp_path, folder)
    assert result.exit_code == 2 and "integrals overflow" in result.output and result.output.strip().count("\n") == 0


def test_compute_ems_prints_no_torch_jit_warning(tmp_path):
    """torch's forward-mode AD warns that torch.jit.script is deprecated when it first loads; compute-ems hides it."""
    script = Path(sys.executable).with_name("diffsampler")
    args = [
        str(script),
        "compute-ems",
        "--model",
        "gmm-2d",
        "--set",
        "grid=4",
        "--set",
        "num_data=16",
        "--out",
        str(tmp_path / "s"),
    ]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "FutureWarning" not in result.stderr + result.stdout


def test_hutchinson_record_runs_through_a_unet_with_attention():
    # torch's fused CPU attention kernel (chosen for float32 channels-last inputs, the layout load_model gives)
    # has no forward-mode AD rule; the estimator must still take JVPs of such a U-Net with attention (every
    # shipped model has some). The l row is checked
    # against central differences of a float64 copy with the same probes: within 1e-4, float32 rounding of a
    # Jacobian-vector product of size O(1) (the float64 differences' own O(eps^2) error is 1e-10).
    from unet_helpers import tiny_denoiser

    model = tiny_denoiser().to(memory_format=torch.channels_last)
    data = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 0.5
    sigma = 0.7
    record = point_record(model, data, sigma, point_generator(0, 0), 4, CPU)
    gen = point_generator(0, 0)
    z = torch.randn(data.shape, generator=gen)
    v = (torch.randint(0, 2, data.shape, generator=gen) * 2 - 1).double()
    x, sig, eps = (data + sigma * z).double(), torch.full((4,), sigma, dtype=torch.float64), 1e-5
    with torch.no_grad():
        jv = (model.double()(x + eps * v, sig) - model(x - eps * v, sig)) / (2 * eps)
    assert torch.allclose(record[0], (1 - v * jv).mean(dim=0), atol=1e-4, rtol=0)
