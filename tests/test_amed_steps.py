"""AMED-Solver / AMED-Plugin step identities with a predictor forced to fixed r and unit scales."""

import pytest
import torch

from diffsampler.errors import UserError
from diffsampler.models import GaussianMixture
from diffsampler.schedules import get_sigmas
from diffsampler.solvers import get_solver
from diffsampler.solvers.amed import AmedParams, amed_plugin, amed_solver

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


@pytest.mark.parametrize("afs", [False, True])
def test_amed_solver_with_half_is_dpm_solver_2(afs):
    model, x, sigmas = _model(), _latents(), get_sigmas("polynomial", 4, 0.002, 80.0)
    got = amed_solver(model, x, sigmas.tolist(), predictor=FixedPredictor(0.5), afs=afs)
    want = get_solver("dpm2").sample(model, x, sigmas, {"afs": afs})
    torch.testing.assert_close(got, want, **TOL)


def test_amed_solver_with_zero_is_euler_and_repeats_the_evaluation():
    model, x, sigmas = _model(), _latents(), get_sigmas("polynomial", 5, 0.002, 80.0)
    seen = []

    def counting(y, s, cond=None):
        seen.append((y.clone(), float(torch.as_tensor(s, dtype=torch.float64).flatten()[0])))
        return model(y, s)

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
    got = amed_plugin(
        model, x, sigmas.tolist(), predictor=FixedPredictor(0.4), base="ipndm", max_order=max_order, afs=afs
    )
    want = get_solver("ipndm").sample(model, x, _doubled(sigmas, 0.4), {"afs": afs, "order": max_order})
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("afs", [False, True])
@pytest.mark.parametrize("max_order", [1, 2, 3])
def test_plugin_dpmpp_with_half_on_logsnr_is_dpmpp_on_the_doubled_grid(afs, max_order):
    """With r = 1/2 on a logSNR grid the doubled grid is again uniform in lambda; order 1 is DDIM (= Euler)."""
    model, x, sigmas = _model(), _latents(), get_sigmas("logsnr", 4, 0.002, 80.0)
    got = amed_plugin(
        model, x, sigmas.tolist(), predictor=FixedPredictor(0.5), base="dpmpp", max_order=max_order, afs=afs
    )
    want = get_solver("dpmpp").sample(model, x, _doubled(sigmas, 0.5), {"order": max_order, "afs": afs})
    torch.testing.assert_close(got, want, **TOL)
    if max_order == 1:
        torch.testing.assert_close(
            got, get_solver("euler").sample(model, x, _doubled(sigmas, 0.5), {"afs": afs}), **TOL
        )


@pytest.mark.parametrize("base", ["ipndm", "dpmpp"])
def test_direction_scale_multiplies_the_second_sub_step_of_multistep_plugins(base):
    """c scales the increment of the sub-step s_n -> t_{n+1}; checked on one interval (no later steps)."""
    model, x, sigmas = _model(), _latents(), [10.0, 2.0]
    plain = amed_plugin(model, x, sigmas, predictor=FixedPredictor(0.5), base=base)
    scaled = amed_plugin(model, x, sigmas, predictor=FixedPredictor(0.5, c=1.1), base=base)
    x_mid = get_solver(base).sample(model, x, torch.tensor([10.0, 20**0.5], dtype=torch.float64), {"order": 1})
    start = x_mid * (2.0 / 20**0.5) if base == "dpmpp" else x_mid
    torch.testing.assert_close(scaled - start, 1.1 * (plain - start), **TOL)


def test_direction_scale_multiplies_the_step_of_amed_solver():
    model, x = _model(), _latents()
    sigmas = [10.0, 2.0]
    plain = amed_solver(model, x, sigmas, predictor=FixedPredictor(0.5))
    scaled = amed_solver(model, x, sigmas, predictor=FixedPredictor(0.5, c=1.1))
    torch.testing.assert_close(scaled - x, 1.1 * (plain - x), **TOL)


@pytest.mark.parametrize(
    "solver, options", [("amed", {}), ("amed-plugin", {"base": "ipndm"}), ("amed-plugin", {"base": "dpmpp"})]
)
@pytest.mark.parametrize("afs", [False, True])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_calls_equal_reported_nfe(solver, options, afs, steps):
    spec, model = get_solver(solver), _model()
    sigmas = get_sigmas("polynomial", steps, 0.002, 80.0)
    opts = {**options, "afs": afs, "predictor": FixedPredictor(0.6)}
    spec.sample(model, _latents(), sigmas, opts)
    assert model.calls == spec.nfe(steps, opts) == 2 * steps - int(afs)


@pytest.mark.parametrize(
    "solver, options", [("amed", {}), ("amed-plugin", {"base": "ipndm"}), ("amed-plugin", {"base": "dpmpp"})]
)
def test_denoise_to_zero_and_a_grid_ending_at_zero_are_counted(solver, options):
    spec, model = get_solver(solver), _model()
    opts = {**options, "predictor": FixedPredictor(0.6)}
    spec.sample(model, _latents(), get_sigmas("polynomial", 3, 0.002, 80.0), {**opts, "denoise_to_zero": True})
    assert model.calls == spec.nfe(3, {**opts, "denoise_to_zero": True}) == 7
    model.reset_calls()
    sigmas = torch.cat([get_sigmas("polynomial", 3, 0.002, 80.0), torch.zeros(1, dtype=torch.float64)])
    out = spec.sample(model, _latents(), sigmas, opts)
    assert model.calls == spec.nfe(4, opts, final_zero=True) == 7 and torch.isfinite(out).all()


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


@pytest.mark.parametrize("max_order, least", [(1, 0.8), (2, 1.6), (3, 2.8)])
def test_plugin_dpmpp_convergence_order_grows_with_max_order(max_order, least):
    """On N(mu, s^2 I), DPM-Solver++ of order k on the doubled logSNR grid (8-32 steps) converges at about k
    (measured 0.96, 1.87, 3.87); a wrong coefficient drops the slope by a whole order."""
    from helpers import measured_order

    def sample(model, x, sigmas):
        return amed_plugin(model, x, sigmas.tolist(), predictor=FixedPredictor(0.5), base="dpmpp", max_order=max_order)

    assert measured_order(sample, [8, 16, 32], schedule="logsnr") > least
