"""The data-mean analytical first step (afs=mean): exact where its assumption holds, and the zero-mean AFS of the
centred problem for every solver; where the mean comes from."""

from __future__ import annotations

import math

import pytest
import torch

from diffsampler.data_mean import ESTIMATE_LATENTS, estimated_mean, known_mean
from diffsampler.errors import UserError
from diffsampler.models import GaussianMixture
from diffsampler.sampling import plan_grid, prepared_options
from diffsampler.schedules import polynomial
from diffsampler.solvers import SOLVERS, get_solver

SIGMA_MAX = 80.0
MEAN = torch.tensor([[0.7, -1.3], [-0.4, 2.1]], dtype=torch.float64)
"""A 2x2-'image' data mean far from 0."""


def exact_afs_variance(sigma: float) -> float:
    """The variance v of N(m, v I) for which AFS is exact at ``sigma``: the exact d = (x - m) sigma / (v + sigma^2)
    equals the AFS d = (x - m) / sqrt(1 + sigma^2) when v = sigma sqrt(1 + sigma^2) - sigma^2 (-> 1/2)."""
    return sigma * math.sqrt(1.0 + sigma**2) - sigma**2


def latents(n: int = 6) -> torch.Tensor:
    return torch.randn(n, *MEAN.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * SIGMA_MAX


def test_one_mean_step_is_the_exact_euler_step_where_its_assumption_holds() -> None:
    """For N(m, v* I) one Euler step with afs=mean equals the Euler step with the true D (float64 rounding, 1e-12
    relative); afs=true (D = 0) misses it by about m (sigma - sigma_next) / sigma."""
    model = GaussianMixture(MEAN[None], exact_afs_variance(SIGMA_MAX), sigma_max=SIGMA_MAX)
    euler, sigmas = get_solver("euler"), torch.tensor([SIGMA_MAX, 10.0])
    x = latents()
    exact = euler.sample(model, x, sigmas)
    mean_step = euler.sample(model, x, sigmas, {"afs": known_mean(model)})
    zero_step = euler.sample(model, x, sigmas, {"afs": True})
    assert torch.allclose(mean_step, exact, rtol=1e-12, atol=1e-12)
    assert (zero_step - exact).abs().max() > 0.5 * float(MEAN.abs().min()) * (SIGMA_MAX - 10.0) / SIGMA_MAX


class Shifted:
    """D'(y, sigma) = D(y + m, sigma) - m: the model of the data translated by -m (its mean 0)."""

    def __init__(self, model: GaussianMixture, mean: torch.Tensor) -> None:
        self.model, self.mean = model, mean

    def __call__(self, y: torch.Tensor, sigma: float | torch.Tensor, cond: object = None) -> torch.Tensor:
        return self.model(y + self.mean, sigma, cond) - self.mean


@pytest.mark.parametrize("name", [n for n, spec in SOLVERS.items() if spec.training_free])
def test_mean_step_is_the_zero_mean_step_of_the_centred_problem(name: str) -> None:
    """Every solver with afs: solve(D, x, afs=m) = m + solve(D', x - m, afs=true), D' the centred model (all the
    solvers are affine in (x, D) with weights summing to 1; tolerance 1e-9 absolute on values of size 80 in
    float64)."""
    model = GaussianMixture(torch.stack([MEAN + 1.0, MEAN - 0.5]), [0.3, 0.6], [0.4, 0.6], sigma_max=SIGMA_MAX)
    mean = known_mean(model)
    spec = get_solver(name)
    sigmas = polynomial(4, 0.002, SIGMA_MAX)
    x = latents()
    with_mean = spec.sample(model, x, sigmas, {"afs": mean})
    centred = spec.sample(Shifted(model, mean), x - mean, sigmas, {"afs": True}) + mean
    assert torch.allclose(with_mean, centred, rtol=0, atol=1e-9)
    assert not torch.allclose(with_mean, spec.sample(model, x, sigmas, {"afs": True}), rtol=0, atol=1e-3)


def test_afs_mean_goes_through_the_sampling_layer() -> None:
    """The option "mean" costs what afs=true costs and is replaced by the model's mean before sampling; without
    that (a solver called directly) it is a clear error, and another word is refused when options are read."""
    model = GaussianMixture(MEAN[None], 0.5, sigma_max=SIGMA_MAX)
    spec = get_solver("heun")
    assert spec.nfe(3, {"afs": "mean"}) == spec.nfe(3, {"afs": True}) == 5
    plan = plan_grid(spec, {"afs": "mean"}, 0.002, SIGMA_MAX, nfe=5)
    prepared = prepared_options(spec, {"afs": "mean"}, model, plan)
    assert torch.equal(prepared["afs"], known_mean(model))
    with pytest.raises(UserError, match="afs=mean needs the data mean"):
        spec.sample(model, latents(), plan.sigmas, {"afs": "mean"})
    with pytest.raises(UserError, match="afs"):
        spec.resolve_options({"afs": "median"})


def test_the_estimate_is_the_average_denoised_at_sigma_max_and_is_cached(tmp_path) -> None:
    """For a mixture the average of D(x, sigma_max) over the latents is the data mean up to the noise of
    ESTIMATE_LATENTS draws: D = m + Cov (x - m) / sigma^2 + ... with x - m ~ sigma z, so a latent's deviation has a
    standard deviation of at most |Cov| / sigma (|Cov| = 2.64 here) and six of its standard errors bound the average;
    the second call reads the cache (the model is not called)."""
    model = GaussianMixture(torch.stack([MEAN + 1.0, MEAN - 0.5]), [0.3, 0.6], [0.4, 0.6], sigma_max=SIGMA_MAX)
    first = estimated_mean(model, torch.device("cpu"), tmp_path)
    assert (first - known_mean(model)).abs().max() < 6.0 * 2.64 / (SIGMA_MAX * math.sqrt(ESTIMATE_LATENTS))
    model.reset_calls()
    assert torch.equal(estimated_mean(model, torch.device("cpu"), tmp_path), first)
    assert model.calls == 0 and len(list(tmp_path.iterdir())) == 1


def test_the_shipped_models_mean_is_their_training_data_mean() -> None:
    """The manifest's mean of fmnist-p1 equals the mean of the Fashion-MNIST training images as the model saw them
    (zero-padded to 32x32, in [-1, 1]); stored to 5 decimals, so 1e-5."""
    from diffsampler.data.datasets import fashion_mnist, to_model_range
    from diffsampler.models import load_model

    mean = known_mean(load_model("fmnist-p1"))
    assert mean is not None
    data = to_model_range(fashion_mnist("train")).double().mean(dim=0)
    assert torch.allclose(mean, data, rtol=0, atol=1e-5)
    assert abs(float(mean.mean()) + 0.562) < 1e-3
