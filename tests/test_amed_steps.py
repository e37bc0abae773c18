"""AMED-Solver / AMED-Plugin step identities with a predictor forced to fixed r and unit scales."""

import math

import pytest
import torch

from diffsampler.amed.predictor import AmedParams
from diffsampler.errors import UserError
from diffsampler.models import GaussianMixture
from diffsampler.schedules import get_sigmas
from diffsampler.solvers import SOLVERS, get_solver
from diffsampler.solvers.amed import amed_plugin, amed_solver
from diffsampler.solvers.amed_bases import IPNDM_COEFFICIENTS

# Identities hold up to float64 round-off of differently ordered sums (|x| ~ 80).
TOL = dict(rtol=1e-10, atol=1e-10)


class FixedPredictor:
    """r_n = r for every sample and step; c = a = 1 (or the given constants)."""

    def __init__(self, r: float, c: float = 1.0, a: float = 1.0) -> None:
        self.r, self.c, self.a = r, c, a

    def __call__(self, t_cur, t_next, features, batch):
        full = lambda v: torch.full((batch,), v, dtype=torch.float64)  # noqa: E731
        return AmedParams(full(self.r), full(self.c), full(self.a))


def _model():
    means = torch.tensor([[1.0, -0.5, 0.3], [-1.0, 0.8, 0.0], [0.2, 0.2, -1.2]], dtype=torch.float64)
    return GaussianMixture(means, variances=[0.04, 0.09, 0.16])


def _latents(n=6):
    return torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 80


def _doubled(sigmas, r):
    """t_0, s_0, t_1, s_1, ..., t_N with s_n = t_{n+1}^r t_n^(1-r)."""
    out = []
    for t, t_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        out += [t, t_next**r * t ** (1 - r)]
    return torch.tensor(out + [sigmas[-1].item()], dtype=torch.float64)


def _ipndm_reference(model, x, sigmas, max_order=4, afs=False):
    """iPNDM (fixed AB weights on d = (x - D) / sigma, warm-up by lower order), written out plainly."""
    grid, buffer = sigmas.tolist(), []
    for i, (t, t_next) in enumerate(zip(grid[:-1], grid[1:])):
        d = x / math.sqrt(1 + t**2) if afs and i == 0 else (x - model(x, t)) / t
        buffer = (buffer + [d])[-max_order:]
        weights = IPNDM_COEFFICIENTS[len(buffer) - 1]
        x = x + (t_next - t) * sum(w * b for w, b in zip(weights, reversed(buffer)))
    return x


def _dpmpp1_reference(model, x, sigmas):
    """DDIM in data prediction: x' = (t'/t) x + (1 - t'/t) D(x, t)."""
    grid = sigmas.tolist()
    for t, t_next in zip(grid[:-1], grid[1:]):
        x = (t_next / t) * x + (1 - t_next / t) * model(x, t)
    return x


@pytest.mark.parametrize("afs", [False, True])
def test_amed_solver_with_half_is_dpm_solver_2(afs):
    model, x, sigmas = _model(), _latents(), get_sigmas("polynomial", 4, 0.002, 80.0)
    got = amed_solver(model, x, sigmas.tolist(), predictor=FixedPredictor(0.5), afs=afs)
    want = get_solver("dpm2").sample(model, x, sigmas, {"afs": afs})
    torch.testing.assert_close(got, want, **TOL)


def test_amed_solver_with_zero_is_euler_and_repeats_the_evaluation():
    model, x, sigmas = _model(), _latents(), get_sigmas("polynomial", 5, 0.002, 80.0)
    seen = []
    counting = lambda y, s, cond=None: (seen.append((y.clone(), float(torch.as_tensor(s, dtype=torch.float64).flatten()[0]))), model(y, s))[1]  # noqa: E731
    got = amed_solver(counting, x, sigmas.tolist(), predictor=FixedPredictor(0.0))
    torch.testing.assert_close(got, get_solver("euler").sample(model, x, sigmas), **TOL)
    for (x1, s1), (x2, s2) in zip(seen[::2], seen[1::2]):
        assert s1 == pytest.approx(s2, rel=1e-14)
        torch.testing.assert_close(x1, x2, rtol=1e-14, atol=1e-12)


@pytest.mark.parametrize("r", [0.3, 0.5, 0.8])
def test_plugin_euler_is_euler_on_the_doubled_grid(r):
    model, x, sigmas = _model(), _latents(), get_sigmas("polynomial", 4, 0.002, 80.0)
    got = amed_plugin(model, x, sigmas.tolist(), predictor=FixedPredictor(r), base="euler")
    torch.testing.assert_close(got, get_solver("euler").sample(model, x, _doubled(sigmas, r)), **TOL)


@pytest.mark.parametrize("r", [0.3, 0.5, 1.0])
def test_plugin_dpm2_with_fixed_r_is_dpm2_with_that_r(r):
    model, x, sigmas = _model(), _latents(), get_sigmas("polynomial", 3, 0.002, 80.0)
    got = amed_plugin(model, x, sigmas.tolist(), predictor=FixedPredictor(r), base="dpm2", afs=True)
    torch.testing.assert_close(got, get_solver("dpm2").sample(model, x, sigmas, {"r": r, "afs": True}), **TOL)


@pytest.mark.parametrize("afs", [False, True])
@pytest.mark.parametrize("max_order", [1, 2, 4])
def test_plugin_ipndm_is_ipndm_on_the_doubled_grid(afs, max_order):
    model, x, sigmas = _model(), _latents(), get_sigmas("polynomial", 4, 0.002, 80.0)
    got = amed_plugin(model, x, sigmas.tolist(), predictor=FixedPredictor(0.4), base="ipndm", max_order=max_order, afs=afs)
    want = _ipndm_reference(model, x, _doubled(sigmas, 0.4), max_order, afs)
    torch.testing.assert_close(got, want, **TOL)
    if "ipndm" in SOLVERS:
        registered = get_solver("ipndm").sample(model, x, _doubled(sigmas, 0.4), {"afs": afs, "max_order": max_order})
        torch.testing.assert_close(got, registered, **TOL)


def test_plugin_dpmpp_first_order_is_ddim_on_the_doubled_grid():
    model, x, sigmas = _model(), _latents(), get_sigmas("logsnr", 4, 0.002, 80.0)
    got = amed_plugin(model, x, sigmas.tolist(), predictor=FixedPredictor(0.5), base="dpmpp", max_order=1)
    torch.testing.assert_close(got, _dpmpp1_reference(model, x, _doubled(sigmas, 0.5)), **TOL)
    torch.testing.assert_close(got, get_solver("euler").sample(model, x, _doubled(sigmas, 0.5)), **TOL)


def test_plugin_dpmpp_with_half_on_logsnr_is_dpmpp_on_the_doubled_grid():
    if "dpmpp" not in SOLVERS:
        pytest.skip("dpmpp is not registered on this branch")
    model, x, sigmas = _model(), _latents(), get_sigmas("logsnr", 4, 0.002, 80.0)
    got = amed_plugin(model, x, sigmas.tolist(), predictor=FixedPredictor(0.5), base="dpmpp", max_order=3)
    want = get_solver("dpmpp").sample(model, x, _doubled(sigmas, 0.5), {"order": 3})
    torch.testing.assert_close(got, want, **TOL)


def test_direction_scale_multiplies_the_step_of_amed_solver():
    model, x = _model(), _latents()
    sigmas = [10.0, 2.0]
    plain = amed_solver(model, x, sigmas, predictor=FixedPredictor(0.5))
    scaled = amed_solver(model, x, sigmas, predictor=FixedPredictor(0.5, c=1.1))
    torch.testing.assert_close(scaled - x, 1.1 * (plain - x), **TOL)


@pytest.mark.parametrize("solver, options", [("amed", {}), ("amed-plugin", {"base": "ipndm"}), ("amed-plugin", {"base": "dpmpp"})])
@pytest.mark.parametrize("afs", [False, True])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_calls_equal_reported_nfe(solver, options, afs, steps):
    spec, model = get_solver(solver), _model()
    sigmas = get_sigmas("polynomial", steps, 0.002, 80.0)
    opts = {**options, "afs": afs, "predictor": FixedPredictor(0.6)}
    spec.sample(model, _latents(), sigmas, opts)
    assert model.calls == spec.nfe(steps, opts) == 2 * steps - int(afs)


def test_odd_budgets_need_afs():
    spec = get_solver("amed")
    assert [spec.steps_for_nfe(n, {"afs": True}) for n in (3, 5, 7, 9)] == [2, 3, 4, 5]
    with pytest.raises(UserError, match="afs=true"):
        spec.steps_for_nfe(5)


def test_missing_predictor_and_unknown_base_are_one_line_errors():
    model, x, sigmas = _model(), _latents(), [80.0, 1.0]
    with pytest.raises(UserError, match="predictor=PATH"):
        amed_solver(model, x, sigmas)
    with pytest.raises(UserError, match="did you mean 'ipndm'"):
        amed_plugin(model, x, sigmas, predictor=FixedPredictor(0.5), base="ipnmd")


@pytest.mark.parametrize("max_order, least", [(1, 0.9), (2, 1.7), (3, 2.2)])
def test_plugin_dpmpp_convergence_order_grows_with_max_order(max_order, least):
    """On N(mu, s^2 I), DPM-Solver++ of order k on the doubled logSNR grid (8-32 steps) converges at about k
    (3M measures 2.4 here: its warm-up steps are of lower order); a wrong coefficient drops the slope."""
    from helpers import measured_order

    def sample(model, x, sigmas):
        return amed_plugin(model, x, sigmas.tolist(), predictor=FixedPredictor(0.5), base="dpmpp", max_order=max_order)

    assert measured_order(sample, [8, 16, 32], schedule="logsnr") > least
