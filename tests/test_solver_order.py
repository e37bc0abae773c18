"""Convergence order of the first solvers on the closed-form single-Gaussian ODE (float64)."""

import pytest

from diffsampler.solvers import get_solver
from helpers import measured_order

NOMINAL = {"euler": 1.0, "heun": 2.0, "dpm2": 2.0}


@pytest.mark.parametrize("name", list(NOMINAL))
@pytest.mark.parametrize("schedule", ["polynomial", "logsnr"])
def test_convergence_order(name, schedule):
    spec = get_solver(name)
    # 32..256 steps is inside the asymptotic range for both grids (measured slopes 0.98 / 2.02-2.04)
    order = measured_order(lambda m, x, s: spec.sample(m, x, s), [32, 64, 128, 256], schedule)
    assert abs(order - NOMINAL[name]) < 0.3, order
