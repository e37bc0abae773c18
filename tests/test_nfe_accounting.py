"""Every solver uses exactly the NFE it reports, and NFE budgets map back to steps exactly."""

import pytest
import torch

from diffsampler.errors import UserError
from diffsampler.models import GaussianMixture
from diffsampler.schedules import get_sigmas
from diffsampler.solvers import SOLVERS, get_solver

TRAINING_FREE = sorted(name for name, spec in SOLVERS.items() if spec.training_free)
"""Solvers that run without an artefact (statistics, predictor); the others test their NFE in their own files."""
OPTION_SETS = [{}, {"afs": True}, {"denoise_to_zero": True}, {"afs": True, "denoise_to_zero": True}]


def _model():
    return GaussianMixture(torch.zeros(1, 3, dtype=torch.float64), variances=1.0)


@pytest.mark.parametrize("name", TRAINING_FREE)
@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_calls_equal_reported_nfe(name, options, steps):
    spec = get_solver(name)
    model = _model()
    sigmas = get_sigmas(spec.default_schedule, steps, 0.002, 80.0)
    spec.sample(model, torch.randn(4, 3, dtype=torch.float64) * 80, sigmas, options)
    assert model.calls == spec.nfe(steps, options)


@pytest.mark.parametrize("name", TRAINING_FREE)
def test_grid_ending_at_zero_takes_an_euler_last_step(name):
    spec = get_solver(name)
    model = _model()
    sigmas = torch.cat([get_sigmas("polynomial", 3, 0.002, 80.0), torch.zeros(1, dtype=torch.float64)])
    spec.sample(model, torch.randn(2, 3, dtype=torch.float64), sigmas)
    assert model.calls == spec.nfe(4, {}, final_zero=True) == spec.evals_per_step * 4 - (spec.evals_per_step - 1)


@pytest.mark.parametrize("name", TRAINING_FREE)
@pytest.mark.parametrize("options", OPTION_SETS)
def test_budget_to_steps_round_trip(name, options):
    spec = get_solver(name)
    for nfe in range(1, 13):
        try:
            steps = spec.steps_for_nfe(nfe, options)
        except UserError as exc:
            assert spec.evals_per_step > 1 or "cannot take a step" in str(exc)
            continue
        assert spec.nfe(steps, options) == nfe


def test_two_eval_solvers_need_afs_for_odd_budgets():
    heun = get_solver("heun")
    with pytest.raises(UserError, match="heun uses 2 NFE per step: NFE 5 .* afs=true"):
        heun.steps_for_nfe(5)
    assert heun.steps_for_nfe(5, {"afs": True}) == 3
    assert heun.steps_for_nfe(6) == 3
    assert get_solver("euler").steps_for_nfe(5, {"afs": True}) == 6


@pytest.mark.parametrize("nfe", [0, -3])
def test_impossible_budgets(nfe):
    with pytest.raises(UserError, match="at least 1"):
        get_solver("euler").steps_for_nfe(nfe)


def test_unknown_option_is_named():
    with pytest.raises(UserError, match="unknown option of solver 'heun' 'asf' \\(did you mean 'afs'"):
        get_solver("heun").resolve_options({"asf": True})


def test_unknown_solver():
    with pytest.raises(UserError, match="did you mean 'heun'"):
        get_solver("huen")


def test_denoise_to_zero_applies_final_denoiser():
    spec = get_solver("euler")
    model = _model()
    sigmas = get_sigmas("polynomial", 3, 0.002, 80.0)
    x = torch.randn(2, 3, dtype=torch.float64) * 80
    plain = spec.sample(model, x, sigmas)
    final = spec.sample(model, x, sigmas, {"denoise_to_zero": True})
    assert torch.allclose(final, model(plain, 0.002))


def test_afs_replaces_first_evaluation_by_x_over_sqrt():
    spec = get_solver("euler")
    model = _model()
    sigmas = torch.tensor([10.0, 5.0], dtype=torch.float64)
    x = torch.randn(2, 3, dtype=torch.float64) * 10
    out = spec.sample(model, x, sigmas, {"afs": True})
    assert model.calls == 0
    assert torch.allclose(out, x + (5.0 - 10.0) * x / (1 + 10.0**2) ** 0.5)


def test_same_latents_give_bit_identical_outputs():
    for name in TRAINING_FREE:
        spec = get_solver(name)
        model = _model()
        sigmas = get_sigmas("polynomial", 4, 0.002, 80.0)
        x = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        assert torch.equal(spec.sample(model, x, sigmas), spec.sample(model, x, sigmas))
