"""diffsampler.kdiffusion both ways: our solvers in k-diffusion's sampler signature equal k-diffusion's samplers on the
same model and sigmas, and k-diffusion's samplers run as our solvers (``kdiffusion:sample_dpm_2``) in a benchmark.

Tolerances: float64 runs use the issue's relative 1e-6 in the max norm (observed ~1e-15: round-off of a different
order of operations). The shipped network runs in float32: the relative bound 1e-5 allows float32 round-off
(~1e-7 a step) grown over 8 steps through the network (observed 1.3e-6 for both Euler and DPM-Solver++(2M)).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_peer_oracles import _close, _k_sampling, _latents, _mixture
from typer.testing import CliRunner

import diffsampler.kdiffusion as K
from diffsampler.cli import app
from diffsampler.latents import standard_normal
from diffsampler.models import load_model
from diffsampler.schedule_file import ScheduleArtefact, write_schedule
from diffsampler.solvers import SOLVERS, get_solver, register_solver
from diffsampler.solvers.runge_kutta import euler

runner = CliRunner()
DPMPP_2M = {"order": 2, "variant": "midpoint", "lower_order_final": False}
"""Our dpmpp options that make it k-diffusion's DPM-Solver++(2M) (tests/test_peer_oracles.py K_CASES)."""
PAIRS = [
    ("sample_euler", {}, "sample_euler"),
    ("sample_dpmpp", DPMPP_2M, "sample_dpmpp_2m"),
    ("sample_heun", {}, "sample_heun"),
    ("sample_dpm2", {}, "sample_dpm_2"),
]


@pytest.mark.parametrize("ours, options, theirs", PAIRS)
def test_equals_k_diffusion_in_float64_with_the_same_callbacks(ours, options, theirs):
    model, x, sigmas = _mixture(), _latents(), K.load_sigmas("polynomial", 8)
    mine, their_steps = [], []
    got = getattr(K, ours)(model, x.clone(), sigmas, callback=mine.append, **options)
    want = getattr(_k_sampling(), theirs)(model, x.clone(), sigmas, callback=their_steps.append, disable=True)
    _close(got, want)
    assert [c["i"] for c in mine] == [c["i"] for c in their_steps] == list(range(8))
    for a, b in zip(mine, their_steps):
        assert float(a["sigma"]) == float(b["sigma"]) and float(a["sigma_hat"]) == float(b["sigma_hat"])
        _close(a["x"], b["x"])
        _close(a["denoised"], b["denoised"])


@pytest.mark.parametrize("ours, options, theirs", PAIRS[:2])
def test_equals_k_diffusion_on_the_shipped_network_in_float32(ours, options, theirs):
    model = load_model("fmnist-p1")
    sigmas = K.load_sigmas("polynomial", 8, model.sigma_min, model.sigma_max)
    x = (standard_normal(range(4), model.sample_shape, 0) * float(sigmas[0])).float()
    with torch.no_grad():
        got = getattr(K, ours)(model, x.clone(), sigmas, **options)
        want = getattr(_k_sampling(), theirs)(model, x.clone(), sigmas, disable=True)
    rel = ((got - want).abs().max() / want.abs().max()).item()
    assert rel < 1e-5, rel


def test_sample_ipndm_equals_the_command_line_on_the_same_sigmas(tmp_path):
    model = load_model("fmnist-p1")
    sigmas = K.load_sigmas("polynomial", 5, model.sigma_min, model.sigma_max)
    grid = json.dumps(sigmas.tolist())
    args = ["sample", "--model", "fmnist-p1", "--solver", "ipndm", "--set", f"sigmas={grid}", "--num-samples", "4"]
    result = runner.invoke(app, [*args, "--device", "cpu", "--out", str(tmp_path), "--name", "s"])
    assert result.exit_code == 0, result.output
    cli = np.load(tmp_path / "s" / "samples.npz")["samples"]
    x = (standard_normal(range(4), model.sample_shape, 0) * float(sigmas[0])).float()
    with torch.no_grad():
        ours = K.sample_ipndm(model, x, sigmas)
    np.testing.assert_array_equal(ours.numpy(), cli)


def test_load_sigmas_named_is_k_diffusions_karras_grid_and_a_file_gets_its_final_zero(tmp_path):
    theirs = _k_sampling().get_sigmas_karras(6, 0.002, 80.0)  # float32 there
    ours = K.load_sigmas("polynomial", 6)
    assert ours.dtype == torch.float64 and ours.numel() == 7 and float(ours[-1]) == 0.0
    torch.testing.assert_close(ours.float(), theirs, rtol=1e-6, atol=0)  # float32 rounding of the same formula
    path = write_schedule(tmp_path / "g.json", ScheduleArtefact([80.0, 10.0, 1.0, 0.1, 0.002], "gits"))
    assert K.load_sigmas(path).tolist() == [80.0, 10.0, 1.0, 0.1, 0.002, 0.0]
    assert K.load_sigmas(str(path), n=5).numel() == 6


@pytest.mark.parametrize(
    "args, message",
    [
        (("polynomial",), "needs n >= 2"),
        (("karras", 5), "unknown schedule 'karras'"),
    ],
)
def test_load_sigmas_refuses_bad_input(args, message):
    with pytest.raises(Exception, match=message) as info:
        K.load_sigmas(*args)
    assert type(info.value).__name__ == "UserError"


def test_every_registered_solver_has_its_function_and_a_plugin_solver_too():
    assert {K.function_name(s) for s in SOLVERS if ":" not in s} <= set(dir(K))
    assert K.sample_amed_plugin.__name__ == "sample_amed_plugin"
    register_solver("my-euler", euler, 1, "polynomial", "a test copy of euler")
    try:
        model, x, sigmas = _mixture(), _latents(), K.load_sigmas("polynomial", 4)
        assert torch.equal(K.sample_my_euler(model, x, sigmas), K.sample_euler(model, x, sigmas))
        assert "sample_my_euler" in dir(K)
    finally:
        SOLVERS.pop("my-euler")
    with pytest.raises(AttributeError):
        K.sample_no_such_solver  # noqa: B018


def test_k_diffusion_sampler_is_a_benchmark_row_equal_to_ours(tmp_path):
    """k-diffusion's sample_dpm_2 run by our benchmark at NFE 4 and 6 equals our dpm2 (same map, float32 latents
    of the same seeds), cell by cell."""
    args = ["benchmark", "--model", "gmm-2d", "--solvers", "kdiffusion:sample_dpm_2,dpm2", "--nfe", "4,6"]
    args += ["--metrics", "rmse", "--num-samples", "16", "--device", "cpu", "--out", str(tmp_path), "--name", "k"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    cells = json.loads((tmp_path / "k" / "results.json").read_text())["cells"]
    values = {(c["solver"], c["nfe"]): c["values"]["rmse"] for c in cells}
    assert {c["nfe_used"] for c in cells} == {4, 6}
    for nfe in (4, 6):
        assert values[("kdiffusion:sample_dpm_2", nfe)] == pytest.approx(values[("dpm2", nfe)], rel=1e-5)
    assert "kdiffusion:sample_dpm_2" in result.output


@pytest.mark.parametrize(
    "solver, nfe, message",
    [
        ("kdiffusion:sample_dpm_2", "5", "uses 2 NFE per step: NFE 5 cannot be met exactly"),
        ("kdiffusion:sample_dpm_fast", "4", "does not take a sigma grid"),
        ("kdiffusion:sample_nope", "4", "unknown k-diffusion sampler 'sample_nope'"),
    ],
)
def test_k_diffusion_samplers_that_cannot_run_are_refused(tmp_path, solver, nfe, message):
    args = ["sample", "--model", "gmm-2d", "--solver", solver, "--nfe", nfe, "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not any(tmp_path.iterdir())


def test_k_diffusion_sampler_nfe_is_counted_from_its_calls():
    spec = get_solver("kdiffusion:sample_lms")
    model, x = _mixture(), _latents()
    sigmas = K.load_sigmas("polynomial", 5)
    model.reset_calls()
    spec.sample(model, x, sigmas)
    assert model.calls == spec.nfe(5, final_zero=True) == 5
