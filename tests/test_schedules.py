"""Sigma grids: endpoints, monotonicity, and the published values of zju-pi/diff-sampler
(diff-solvers-main/solver_utils.py)."""

import pytest
import torch

from diffsampler.errors import UserError
from diffsampler.schedules import SCHEDULES, get_sigmas, validate_sigmas

# Values for 6 steps on [0.002, 80] as printed in the diff-sampler notes (4 significant figures):
# an independent computation of the same formulas, so a 1e-3 relative tolerance covers the rounding.
PUBLISHED = {
    "polynomial": [80, 30.18, 9.72, 2.52, 0.47, 0.0515, 0.002],
    "logsnr": [80, 13.68, 2.34, 0.40, 0.0684, 0.0117, 0.002],
    "time_uniform": [80, 20.97, 6.95, 2.82, 1.29, 0.527, 0.002],
    "time_quadratic": [80, 8.67, 2.30, 0.93, 0.384, 0.110, 0.002],
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_schedule_matches_published_values(name):
    got = get_sigmas(name, 6, 0.002, 80.0)
    want = torch.tensor(PUBLISHED[name], dtype=torch.float64)
    # published values carry 2-4 significant digits: compare within half a unit of the last digit
    assert torch.allclose(got, want, rtol=6e-3), (got.tolist(), want.tolist())


@pytest.mark.parametrize(
    "name", [name for name, spec in SCHEDULES.items() if not spec.needs_table and not spec.needs_flow]
)
@pytest.mark.parametrize("steps", [1, 2, 5, 17])
def test_schedule_endpoints_and_monotone(name, steps):
    grid = get_sigmas(name, steps, 0.01, 50.0)
    assert grid.dtype == torch.float64
    assert grid.numel() == steps + 1
    assert grid[0].item() == pytest.approx(50.0, rel=1e-12)
    assert grid[-1].item() == pytest.approx(0.01, rel=1e-12)
    assert (grid[1:] < grid[:-1]).all()


def test_polynomial_rho_one_is_uniform_in_sigma():
    grid = get_sigmas("polynomial", 4, 1.0, 5.0, rho=1.0)
    assert torch.allclose(grid, torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64))


@pytest.mark.parametrize(
    "bad",
    [[1.0], [1.0, 2.0], [3.0, 3.0, 1.0], [2.0, -1.0], [float("nan"), 1.0]],
)
def test_validate_rejects_bad_grids(bad):
    with pytest.raises(UserError):
        validate_sigmas(bad)


def test_validate_allows_final_zero():
    assert validate_sigmas([2.0, 1.0, 0.0])[-1].item() == 0.0


def test_bad_schedule_arguments():
    with pytest.raises(UserError, match="did you mean 'logsnr'"):
        get_sigmas("logsrn", 4, 0.002, 80)
    with pytest.raises(UserError, match="at least 1 step"):
        get_sigmas("logsnr", 0, 0.002, 80)
    with pytest.raises(UserError, match="sigma_min < sigma_max"):
        get_sigmas("logsnr", 3, 5.0, 1.0)
