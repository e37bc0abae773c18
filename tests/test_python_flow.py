"""``python:`` models with ``prediction=flow``: the user's velocity network through the flow wrapper
(``diffsampler.models.flow.velocity_denoise``), sampled from t = 1 (sigma = inf) on the ``flow`` schedule and checked
against the closed-form flow map of Gaussian data."""

import textwrap

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import diffsampler as ds
from diffsampler.cli import app
from diffsampler.errors import UserError
from diffsampler.models import load_model
from diffsampler.schedules import FlowGrid, get_sigmas

VELOCITY = """
import torch

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
STD = torch.tensor([0.5, 0.25], dtype=torch.float64)


def posterior_mean(x_t, t):
    # E[x0 | x_t] of x0 ~ N(MEAN, diag(STD^2)), x_t = (1 - t) x0 + t eps, per coordinate
    var = STD**2
    return MEAN + (1 - t) * var * (x_t - (1 - t) * MEAN) / ((1 - t) ** 2 * var + t**2)


class Velocity(torch.nn.Module):
    sample_shape = (2,)
    prediction = "flow"

    def forward(self, x_t, t):  # v = E[eps - x0 | x_t] = (x_t - E[x0 | x_t]) / t
        t = t.to(torch.float64).reshape(-1, 1)
        return ((x_t - posterior_mean(x_t, t)) / t).to(x_t.dtype)


class ReversedVelocity(torch.nn.Module):
    # facebookresearch/flow_matching style: time s = 1 - t, scaled by 1000, returns dx/ds = -v
    sample_shape = (2,)

    def forward(self, x_t, s):
        t = 1 - s.to(torch.float64).reshape(-1, 1) / 1000
        return -((x_t - posterior_mean(x_t, t)) / t).to(x_t.dtype)
"""
MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
STD = torch.tensor([0.5, 0.25], dtype=torch.float64)
SETTINGS = dict(schedule="flow", dtype="float64")


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "velocity.py"
    path.write_text(textwrap.dedent(VELOCITY))
    return path


def noise(n=16):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def rel(a, b):
    return float((a.double() - b).norm() / b.norm())


@pytest.mark.parametrize("solver", ["euler", "dpmpp", "unipc", "ipndm"])
def test_flow_python_model_from_t1_converges_to_the_exact_flow_map(user_file, solver):
    """The ODE maps noise eps at t = 1 to m + s eps exactly; the error falls 4x or more from NFE 8 to 64 (the flow
    grid's steps), and the user's file gives the packaged closed-form model's samples (both float64, stored in
    float32: 1e-12 allows no more than identical rounding)."""
    model = load_model(f"python:{user_file}:Velocity", options={"shift": 3})
    exact = MEAN + STD * noise()
    results = [ds.sample(model, solver=solver, nfe=nfe, noise=noise(), **SETTINGS) for nfe in (8, 64)]
    assert all(float(r.sigmas[0]) == float("inf") and float(r.sigmas[-1]) == 0 for r in results)
    errors = [rel(r.samples, exact) for r in results]
    assert errors[1] < errors[0] / 4, errors
    packaged = ds.sample("gauss-flow-2d", solver=solver, nfe=8, noise=noise(), **SETTINGS).samples  # shift 3 too
    assert (results[0].samples - packaged).abs().max() < 1e-12


def test_time_scale_and_reverse_time_read_a_reversed_network(user_file):
    """time_scale 1000 and reverse_time: the network gets 1000 (1 - t) and returns -v; same samples (1e-12)."""
    plain = load_model(f"python:{user_file}:Velocity")
    options = {"prediction": "flow", "time_scale": 1000, "reverse_time": True}
    reversed_ = load_model(f"python:{user_file}:ReversedVelocity", options=options)
    a, b = (ds.sample(m, solver="dpmpp", nfe=6, noise=noise(), **SETTINGS).samples for m in (plain, reversed_))
    assert (a - b).abs().max() < 1e-12


def test_shift_sets_the_flow_grid_and_the_sigma_range(user_file):
    model = load_model(f"python:{user_file}:Velocity", options={"shift": 3})
    assert model.flow_grid == FlowGrid(shift=3.0)
    assert model.sigma_max == pytest.approx(3 * 999) and model.sigma_min == pytest.approx(3 / 999)
    got = ds.sample(model, solver="euler", nfe=5, num_samples=2, **SETTINGS).sigmas
    assert torch.equal(got, get_sigmas("flow", 5, 1.0, 2.0, flow_grid=FlowGrid(shift=3.0)))
    assert model.describe()["prediction"] == "flow" and model.describe()["shift"] == 3.0


def test_flow_python_model_through_the_cli(user_file, tmp_path):
    args = ["sample", "--model", f"python:{user_file}:Velocity", "--solver", "unipc", "--schedule", "flow"]
    args += ["--nfe", "6", "--num-samples", "4", "--out", str(tmp_path), "--name", "pyflow"]
    result = CliRunner().invoke(app, [*args, "--set", "model_options.shift=2"])
    assert result.exit_code == 0, result.output
    data = np.load(tmp_path / "pyflow" / "samples.npz")
    assert data["sigmas"][0] == np.inf and data["sigmas"][-1] == 0
    heun = [a if a != "unipc" else "heun" for a in args]
    result = CliRunner().invoke(app, [*heun[:-1], "bad"])
    assert result.exit_code == 2 and "heun has no finite first step" in result.output, result.output


@pytest.mark.parametrize(
    "options, message",
    [
        ({"prediction": "x0", "shift": 3}, "model option shift applies to prediction=flow only"),
        ({"shift": 0}, "shift must be a positive number"),
        ({"time_scale": -1}, "time_scale must be positive"),
        ({"reverse_time": "yes"}, "reverse_time must be true or false"),
    ],
)
def test_bad_flow_options_are_one_clear_error(user_file, options, message):
    with pytest.raises(UserError, match=message):
        load_model(f"python:{user_file}:Velocity", options=options)


def test_api_sigmas_and_solve_take_a_flow_model_from_t1(user_file):
    """ds.sigmas gives the model's flow grid; ds.solve starts at sigma = inf from the noise itself and equals
    ds.sample on the same latents (float64; 1e-12); a non-flow model refuses a grid from inf."""
    model = load_model(f"python:{user_file}:Velocity", options={"shift": 3})
    grid = ds.sigmas("flow", 6, model=model)
    assert float(grid[0]) == float("inf")
    solved = ds.solve(model, noise(), grid, "unipc")
    sampled = ds.sample(model, solver="unipc", nfe=6, noise=noise(), **SETTINGS).samples
    assert (solved - sampled).abs().max() < 1e-6
    with pytest.raises(UserError, match="needs a flow-matching model"):
        ds.solve(ds.load_model("gmm-2d"), noise(), grid, "euler")
