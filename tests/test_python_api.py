"""The Python API (``import diffsampler as ds``): the same numbers as the commands, given latents, the per-step
callback, the low-level ``solve``, named grids, ``benchmark`` and its bad inputs."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import diffsampler as ds
from diffsampler.cli import app
from diffsampler.errors import UserError
from diffsampler.latents import standard_normal
from diffsampler.solvers import SOLVERS

runner = CliRunner()
TRAINING_FREE = [name for name, spec in SOLVERS.items() if spec.training_free]


def test_sample_equals_the_command_s_saved_output_bit_for_bit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["sample", "--model", "fmnist-p1", "--solver", "ipndm", "--nfe", "5", "--num-samples", "8", "--name", "a"]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    saved = np.load(tmp_path / "results" / "samples" / "a" / "samples.npz")
    got = ds.sample(ds.load_model("fmnist-p1"), solver="ipndm", nfe=5, num_samples=8)
    assert torch.equal(got.samples, torch.from_numpy(saved["samples"]))
    assert torch.equal(got.sigmas, torch.from_numpy(saved["sigmas"]))
    assert got.nfe == 5 and got.schedule == "polynomial"


def test_given_noise_is_used_as_the_latents_scaled_by_sigma_max():
    """Our own seeded latents given as noise= reproduce the seeded run exactly, and solve() from noise * sigma_max
    equals sample(noise=...)."""
    model = ds.load_model("gmm-2d")
    z = standard_normal(range(6), (2,), 3)
    seeded = ds.sample(model, solver="dpmpp", nfe=4, num_samples=6, seed=3)
    given = ds.sample(model, solver="dpmpp", nfe=4, noise=z)
    assert torch.equal(given.samples, seeded.samples)
    low = ds.solve(model, (z * given.sigmas[0]).float(), given.sigmas, "dpmpp")
    assert torch.equal(low, given.samples)
    other = ds.sample(model, solver="dpmpp", nfe=4, noise=torch.randn(6, 2))
    assert not torch.equal(other.samples, seeded.samples)


@pytest.mark.parametrize("solver", TRAINING_FREE)
def test_callback_hears_every_step_and_changes_nothing(solver):
    """Once per step, in order, x at the step's start and D(x, sigma) there: the model called again on the reported
    x gives the reported denoised to 1e-11 (float64; solvers that keep d = (x - D) / sigma report x - sigma d, a
    rounding of |x| <= ~200 away). UniPC reports the evaluation at the predicted point that its corrector reuses,
    so that check is left out for it."""
    model = ds.load_model("gmm-2d")
    seen = []
    settings = dict(solver=solver, nfe=6, num_samples=4, dtype="float64")
    with_cb = ds.sample(model, callback=seen.append, **settings)
    without = ds.sample(model, **settings)
    assert torch.equal(with_cb.samples, without.samples)
    steps = with_cb.sigmas.numel() - 1
    assert [d["i"] for d in seen] == list(range(steps))
    assert [d["sigma"] for d in seen] == with_cb.sigmas[:-1].tolist()
    if solver != "unipc":
        for d in seen:
            assert (model(d["x"], d["sigma"]) - d["denoised"]).abs().max() < 1e-11


def test_sigmas_gives_the_named_grid():
    """EDM eq. 5 with rho = 7 between EDM's default ends, checked from the closed form (float64, 1e-12)."""
    grid = ds.sigmas("polynomial", 4)
    i = torch.arange(5, dtype=torch.float64)
    expected = (80 ** (1 / 7) + i / 4 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert torch.allclose(grid, expected, rtol=1e-12, atol=0)
    assert ds.sigmas("logsnr", 3, sigma_min=1e-3, sigma_max=1.0).tolist() == pytest.approx([1, 1e-1, 1e-2, 1e-3])


def test_benchmark_returns_the_table_and_shares_its_records_with_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outcome = ds.benchmark("gmm-2d", solvers=["euler", "ipndm"], nfe=[3], metrics=["rmse"], num_samples=8, name="r")
    table = outcome.report.tables[0]
    assert table.name == "rmse" and [label for label, _ in table.rows] == ["euler", "ipndm"]
    record = json.loads(next((tmp_path / "results" / "r" / "records").rglob("rmse.json")).read_text())
    assert record["value"] in [row[0].value for _, row in table.rows]
    args = ["benchmark", "--model", "gmm-2d", "--solvers", "euler,ipndm", "--nfe", "3", "--metrics", "rmse"]
    result = runner.invoke(app, [*args, "--num-samples", "8", "--name", "r"], catch_exceptions=False)
    assert result.exit_code == 0 and "0 cells sampled, 2 reused" in result.output, result.output


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(noise=torch.randn(3, 5)), r"noise must have shape \(N, 2\)"),
        (dict(noise=torch.full((3, 2), float("nan"))), "finite"),
        (dict(noise=torch.randn(3, 2), num_samples=4), "holds 3 latents"),
        (dict(out="x"), "takes no 'out'"),
        (dict(bogus=1), "unknown key in diffsampler.sample 'bogus'"),
        (dict(options={"order": 9}), "order"),
    ],
)
def test_bad_api_input_is_a_user_error(kwargs, message):
    with pytest.raises(UserError, match=message):
        ds.sample("gmm-2d", solver="ipndm", nfe=3, **kwargs)


def test_the_package_exports_the_api():
    assert set(ds.__all__) >= {"load_model", "sample", "solve", "sigmas", "benchmark", "SampleResult"}


def test_a_k_diffusion_sampler_hears_the_same_callback_as_ours():
    """kdiffusion:sample_euler passes our callback to k-diffusion's own: the same steps, states and denoised as our
    euler (float64; both take the same Euler steps, so 1e-12)."""
    if importlib.util.find_spec("k_diffusion") is None:
        pytest.skip("k-diffusion is not installed (pip install '.[test]')")
    ours, theirs = [], []
    settings = dict(nfe=4, num_samples=3, dtype="float64")
    ds.sample("gmm-2d", solver="euler", callback=ours.append, **settings)
    ds.sample("gmm-2d", solver="kdiffusion:sample_euler", schedule="polynomial", callback=theirs.append, **settings)
    assert [d["i"] for d in theirs] == [d["i"] for d in ours] == [0, 1, 2, 3]
    for a, b in zip(ours, theirs):
        assert float(b["sigma"]) == a["sigma"]
        assert (a["x"] - b["x"]).abs().max() < 1e-12 and (a["denoised"] - b["denoised"]).abs().max() < 1e-12
