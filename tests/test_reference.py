"""Error against a reference ODE solution, and the pixel-space Frechet distance to known moments."""

import math

import numpy as np
import pytest
import torch

from diffsampler.errors import UserError
from diffsampler.latents import standard_normal
from diffsampler.metrics.frechet import frechet_distance, mean_and_covariance
from diffsampler.metrics.pixel_frechet import frechet_to_gaussian, symmetric_sqrt
from diffsampler.metrics.reference import (
    ReferenceCache,
    converged_rk4,
    max_error,
    reference_solution,
    rk4_log_sigma,
    rmse,
)
from diffsampler.models import load_model

from helpers import gaussian_exact, latents, single_gaussian


def test_rk4_reference_is_fourth_order_on_the_closed_form_gaussian():
    model = single_gaussian(8)
    x = latents(16, 8)
    exact = gaussian_exact(model, x, 80.0, 0.002)
    errors = [float((rk4_log_sigma(model, x, 80.0, 0.002, n) - exact).abs().max()) for n in (8, 16, 32)]
    # Halving the step of a 4th-order method divides the error by about 16; > 10 leaves room for the
    # pre-asymptotic first halving while still failing for any method of order 3 or less (ratio <= 8).
    assert errors[1] / errors[2] > 10, errors
    assert errors[2] < 1e-3


def test_single_gaussian_uses_the_closed_form():
    model = single_gaussian(8)
    x = latents(4, 8)
    ref = reference_solution(model, x, 80.0, 0.002)
    assert ref.steps == 0
    torch.testing.assert_close(ref.solution, gaussian_exact(model, x, 80.0, 0.002), rtol=1e-12, atol=1e-12)


def test_converged_rk4_meets_its_tolerance_against_a_much_finer_solve():
    model = load_model("gmm-2d")
    x = standard_normal(range(64), (2,), 0) * 80.0
    tol = 1e-4
    ref = converged_rk4(model, x, 80.0, 0.002, steps=8, tol=tol)
    fine = rk4_log_sigma(model, x, 80.0, 0.002, 512)
    assert float(ref.halving_difference.max()) <= tol
    # The accepted N-step solve is closer to the truth than its difference from the N/2-step solve.
    assert float((ref.solution - fine).abs().max()) <= tol
    assert ref.steps >= 16


def test_converged_rk4_refines_only_unconverged_samples():
    model = load_model("gmm-2d")
    x = standard_normal(range(32), (2,), 0) * 80.0
    model.reset_calls()
    converged_rk4(model, x, 80.0, 0.002, steps=8, tol=1e-4)
    calls_batched = model.calls
    # Every sample converging at the first candidate costs (4 + 8) steps x 4 calls; any refinement costs more calls,
    # so the per-sample result must equal the solve of each sample on its own.
    assert calls_batched >= 48
    alone = torch.cat(
        [converged_rk4(model, x[i : i + 1], 80.0, 0.002, steps=8, tol=1e-4).solution for i in range(0, 32, 7)]
    )
    together = converged_rk4(model, x, 80.0, 0.002, steps=8, tol=1e-4).solution[0:32:7]
    torch.testing.assert_close(alone, together, rtol=0, atol=1e-12)


def test_converged_rk4_that_cannot_converge_is_a_one_line_user_error():
    model = load_model("gmm-2d")
    x = standard_normal(range(4), (2,), 0) * 80.0
    with pytest.raises(UserError, match="did not converge") as info:
        converged_rk4(model, x, 80.0, 0.002, steps=4, tol=1e-14, max_steps=8)
    assert "\n" not in str(info.value)


def test_reference_cache_extends_from_disk_and_ignores_batch_size(tmp_path):
    model = load_model("gmm-2d")
    small = ReferenceCache(model, 3, 80.0, 0.002, torch.device("cpu"), 4, tmp_path).get(6)
    assert len(list(tmp_path.iterdir())) == 1
    big = ReferenceCache(model, 3, 80.0, 0.002, torch.device("cpu"), 5, tmp_path).get(13)
    assert big.solution.shape == (13, 2)
    assert torch.equal(big.solution[:6], small.solution)
    direct = ReferenceCache(model, 3, 80.0, 0.002, torch.device("cpu"), 13, None).get(13)
    torch.testing.assert_close(direct.solution, big.solution, rtol=0, atol=1e-12)


def test_rmse_and_max_error():
    a = torch.zeros(2, 2)
    b = torch.tensor([[3.0, 0.0], [0.0, -4.0]])
    assert rmse(a, b) == pytest.approx(math.sqrt(25 / 4))
    assert max_error(a, b) == 4.0


@pytest.mark.parametrize("num", [5, 50])
def test_pixel_frechet_equals_the_direct_formula(num):
    gen = np.random.default_rng(0)
    dim = 8
    factor = gen.normal(size=(dim, dim))
    cov = factor @ factor.T / dim + 0.1 * np.eye(dim)
    mean = gen.normal(size=dim)
    samples = gen.normal(size=(num, 2, 4)) * 1.3 + 0.2
    m, s = mean_and_covariance(samples.reshape(num, -1))
    direct = frechet_distance(m, s, mean, cov)
    fast = frechet_to_gaussian(torch.from_numpy(samples), mean, symmetric_sqrt(cov))
    # Both are float64 evaluations of the same formula (scipy's sqrtm vs singular values): agree to 1e-8 relative.
    assert fast == pytest.approx(direct, rel=1e-8)


def test_pixel_frechet_rejects_mismatched_statistics():
    with pytest.raises(UserError):
        frechet_to_gaussian(torch.zeros(4, 3), np.zeros(2), np.eye(2))
