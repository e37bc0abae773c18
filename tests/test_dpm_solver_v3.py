"""DPM-Solver-v3: special cases with closed forms, the corrector conventions, grid snapping, NFE, and accuracy
with estimated statistics on a Gaussian mixture."""

import math
from pathlib import Path

import pytest
import torch

from diffsampler.ems.estimate import lambda_grid, point_generator, point_record, statistics_from_records
from diffsampler.errors import UserError
from diffsampler.models import GaussianMixture
from diffsampler.schedules import get_sigmas, vp_linear_fit
from diffsampler.solvers import SOLVERS, get_solver
from diffsampler.solvers.dpm_solver_v3 import EmpiricalStatistics, corrector_sigma_limit, snap_to_grid

from helpers import SIGMA_MAX, SIGMA_MIN, gaussian_exact, latents, single_gaussian

V3 = get_solver("dpm-solver-v3")
PREDICTOR_ONLY = {"corrector": False, "lower_order_final": False}


def constant_statistics(n: int, shape: tuple[int, ...], l: float, s: float) -> EmpiricalStatistics:
    full = (n + 1, *shape)
    return EmpiricalStatistics(torch.full(full, l), torch.full(full, s), torch.zeros(full), SIGMA_MIN, SIGMA_MAX)


def taylor_2m(denoiser, x, sigmas):
    """DPM-Solver++(2M) in the Taylor form, EDM: x_t = e^-h x_s + (1 - e^-h) D_s + (h - 1 + e^-h) dD/dlambda."""
    lam = [-math.log(float(s)) for s in sigmas]
    previous = None
    for i in range(len(lam) - 1):
        d = denoiser(x, float(sigmas[i]))
        h = lam[i + 1] - lam[i]
        x_next = math.exp(-h) * x + (1 - math.exp(-h)) * d
        if previous is not None:
            x_next = x_next + (h - 1 + math.exp(-h)) * (d - previous) / (lam[i] - lam[i - 1])
        previous, x = d, x_next
    return x


def _toy():
    return single_gaussian(4), latents(8, 4)


def quadrature_bound(n: int, x: torch.Tensor) -> float:
    """Trapezoid error on e^(+-lambda) with spacing h0 = span / N is h0^2 / 12 relative; scaled by max |x_T|."""
    h0 = (math.log(SIGMA_MAX) - math.log(SIGMA_MIN)) / n
    return h0**2 / 12 * x.abs().max().item()


@pytest.mark.parametrize("steps", [3, 6, 10])
@pytest.mark.parametrize("l, s", [(1.0, 0.0), (0.0, -1.0)])
def test_first_order_with_data_or_noise_prediction_statistics_is_euler(steps, l, s):
    # l=1,s=0,b=0 (data prediction) and l=0,s=-1,b=0 (noise prediction) both make order 1 exactly DDIM = Euler;
    # the only difference is the trapezoid quadrature of the integrals, O(h0^2): it must shrink 4x when N doubles.
    model, x = _toy()
    sigmas = get_sigmas("logsnr", steps, SIGMA_MIN, SIGMA_MAX)
    euler = get_solver("euler").sample(model, x, sigmas)
    diffs = [
        (
            V3.sample(model, x, sigmas, {"stats": constant_statistics(n, (4,), l, s), "order": 1, "corrector": False})
            - euler
        )
        .abs()
        .max()
        .item()
        for n in (600, 1200)
    ]
    assert diffs[1] < quadrature_bound(1200, x)
    assert 3.5 < diffs[0] / diffs[1] < 4.5


@pytest.mark.parametrize("steps", [3, 6, 10])
def test_second_order_degenerate_is_dpm_solver_pp_2m_taylor(steps):
    model, x = _toy()
    sigmas = get_sigmas("logsnr", steps, SIGMA_MIN, SIGMA_MAX)
    reference = taylor_2m(model, x, sigmas)
    diffs = [
        (
            V3.sample(model, x, sigmas, {"stats": constant_statistics(n, (4,), 1.0, 0.0), "order": 2, **PREDICTOR_ONLY})
            - reference
        )
        .abs()
        .max()
        .item()
        for n in (600, 1200)
    ]
    assert diffs[1] < quadrature_bound(1200, x)
    assert 3.5 < diffs[0] / diffs[1] < 4.5


def explicit_lambda_taylor(denoiser, x, lambdas, order):
    """Plain (non-exponential) Adams-type steps in lambda on dx/dlambda = -(x - D): order 1 is
    x_t = x_s - h (x_s - D_s); order 2 adds - h^2 / 2 times the divided difference of x - D."""
    previous = None
    for i in range(len(lambdas) - 1):
        f = x - denoiser(x, math.exp(-lambdas[i]))
        h = lambdas[i + 1] - lambdas[i]
        x_next = x - h * f
        if order == 2 and previous is not None:
            x_next = x_next - h**2 / 2 * (previous - f) / (lambdas[i - 1] - lambdas[i])
        previous, x = f, x_next
    return x


@pytest.mark.parametrize("order", [1, 2])
def test_zero_statistics_give_explicit_steps_in_lambda(order):
    # l = s = b = 0: f = sigma eps = x - D, no exponential factor (L = S = 0), I = lambda - lambda_T and
    # E_1 = h^2 / 2 are integrated exactly by the trapezoid rule, so v3 is the explicit Taylor method in lambda
    # to rounding (not DDIM: that special case is l = 1 or l = 0 with s = -1, tested above).
    model, x = _toy()
    n, steps = 120, 6
    stats = constant_statistics(n, (4,), 0.0, 0.0)
    lambdas = lambda_grid(SIGMA_MIN, SIGMA_MAX, n)[:: n // steps].tolist()
    sigmas = torch.tensor([math.exp(-lam) for lam in lambdas], dtype=torch.float64)
    ours = V3.sample(model, x, sigmas, {"stats": stats, "order": order, **PREDICTOR_ONLY})
    reference = explicit_lambda_taylor(model, x, lambdas, order)
    assert torch.allclose(ours, reference, rtol=1e-10, atol=1e-10 * x.abs().max().item())


def test_second_order_degenerate_matches_registered_dpmpp_taylor():
    if "dpmpp" not in SOLVERS:
        pytest.skip("solver 'dpmpp' is not registered on this branch")
    spec = get_solver("dpmpp")
    wanted = {"order": 2, "variant": "taylor", "lower_order_final": False}
    options = {k: v for k, v in wanted.items() if k in spec.options}
    model, x = _toy()
    sigmas = get_sigmas("logsnr", 6, SIGMA_MIN, SIGMA_MAX)
    ours = V3.sample(
        model, x, sigmas, {"stats": constant_statistics(1200, (4,), 1.0, 0.0), "order": 2, **PREDICTOR_ONLY}
    )
    assert (ours - spec.sample(model, x, sigmas, options)).abs().max().item() < quadrature_bound(1200, x)


def gaussian_statistics(model: GaussianMixture, n: int) -> EmpiricalStatistics:
    """Exact statistics of N(mu, s0^2 I): l = sigma^2 / (sigma^2 + s0^2), s = 0, b = df/dlambda with f = -l mu."""
    s0_sq = float(model.variances[0])
    lam = torch.as_tensor(lambda_grid(SIGMA_MIN, SIGMA_MAX, n))[:, None]
    e2 = torch.exp(2 * lam) * s0_sq
    mu = model.means[0][None]
    l = (1 / (1 + e2)).expand(n + 1, mu.shape[1])
    b = 2 * mu * e2 / (1 + e2) ** 2
    return EmpiricalStatistics(l, torch.zeros_like(l), b, SIGMA_MIN, SIGMA_MAX)


@pytest.mark.parametrize("steps", range(1, 11))
def test_exact_gaussian_statistics_make_v3_exact(steps):
    # With exact statistics g is constant in lambda, so every order is exact up to the quadrature (~1e-6 here,
    # for outputs of size ~1 from latents of size ~80).
    model = single_gaussian(8)
    x = latents(16, 8)
    stats = gaussian_statistics(model, 1200)
    sigmas = get_sigmas("logsnr", steps, SIGMA_MIN, SIGMA_MAX)
    exact = gaussian_exact(model, x, SIGMA_MAX, SIGMA_MIN)
    for options in ({"order": 1, "corrector": False}, {}):
        assert (V3.sample(model, x, sigmas, {"stats": stats, **options}) - exact).abs().max().item() < 2e-5


def test_pseudo_order_equals_vandermonde_up_to_order_two_and_differs_at_three():
    model = GaussianMixture(torch.tensor([[-1.0, 0.5], [1.0, -0.5]], dtype=torch.float64), variances=0.05)
    x = latents(8, 2)
    stats = constant_statistics(600, (2,), 1.0, 0.0)
    sigmas = get_sigmas("logsnr", 8, SIGMA_MIN, SIGMA_MAX)

    def run(order, pseudo):
        return V3.sample(
            model, x, sigmas, {"stats": stats, "order": order, "predictor_pseudo": pseudo, "corrector": False}
        )

    assert torch.allclose(run(2, True), run(2, False), rtol=0, atol=1e-12)
    assert (run(3, True) - run(3, False)).abs().max() > 1e-6


@pytest.mark.parametrize(
    "options", [{}, {"afs": True}, {"denoise_to_zero": True}, {"corrector_pseudo": True, "half_corrector": True}]
)
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_nfe_equals_steps(options, steps):
    model, x = _toy()
    opts = {"stats": constant_statistics(120, (4,), 1.0, 0.0), **options}
    V3.sample(model, x, get_sigmas("logsnr", steps, SIGMA_MIN, SIGMA_MAX), opts)
    assert model.calls == V3.nfe(steps, opts)


def test_half_corrector_limit_is_vp_time_one_half():
    beta_d, beta_min = vp_linear_fit(SIGMA_MIN, SIGMA_MAX)
    limit = corrector_sigma_limit(SIGMA_MIN, SIGMA_MAX)
    assert limit == pytest.approx(math.sqrt(math.exp(beta_d / 8 + beta_min / 2) - 1), rel=1e-12)
    assert 2.5 < limit < 3.0


def test_half_corrector_corrects_only_below_the_limit():
    # Convention of the paper (corrector only where VP time t <= 0.5, i.e. sigma <= limit ~ 2.8); the authors'
    # code does the opposite. Corrected points are the grid's interior points.
    model = GaussianMixture(torch.tensor([[-1.0, 0.5], [1.0, -0.5]], dtype=torch.float64), variances=0.05)
    x = latents(8, 2)
    stats = constant_statistics(1200, (2,), 1.0, 0.0)

    def run(sigmas, **options):
        return V3.sample(model, x, torch.tensor(sigmas, dtype=torch.float64), {"stats": stats, **options})

    low = [80.0, 2.0, 0.5, 0.1, 0.002]  # interior points all below the limit: half = full corrector
    high = [80.0, 40.0, 20.0, 10.0, 0.002]  # interior points all above it: half = no corrector
    assert torch.equal(run(low, half_corrector=True), run(low))
    assert not torch.equal(run(low, corrector=False), run(low))
    assert torch.equal(run(high, half_corrector=True), run(high, corrector=False))
    assert not torch.equal(run(high, corrector=False), run(high))


def test_snapping_keeps_steps_on_distinct_grid_points():
    stats = constant_statistics(10, (2,), 1.0, 0.0)
    crowded = [80.0, 79.0, 78.0, 77.0, 0.0021, 0.002]
    idx = snap_to_grid(crowded, stats)
    assert idx[0] == 0 and idx[-1] == 10 and all(b > a for a, b in zip(idx, idx[1:]))
    with pytest.raises(UserError, match="do not fit on statistics with 10 grid intervals"):
        snap_to_grid(get_sigmas("logsnr", 11, SIGMA_MIN, SIGMA_MAX).tolist(), stats)
    with pytest.raises(UserError, match="leaves the statistics' range"):
        snap_to_grid([100.0, 1.0, 0.002], stats)
    with pytest.raises(UserError, match="cannot step to sigma = 0"):
        snap_to_grid([80.0, 1.0, 0.0], stats)


def test_missing_statistics_is_one_line_error():
    model, x = _toy()
    with pytest.raises(UserError, match="needs empirical model statistics"):
        V3.sample(model, x, get_sigmas("logsnr", 3, SIGMA_MIN, SIGMA_MAX))


def image_mixture() -> GaussianMixture:
    """8 smooth 1x6x6 patterns with different variances: per-element statistics carry structure."""
    gen = torch.Generator().manual_seed(0)
    means = torch.randn(8, 1, 6, 6, generator=gen, dtype=torch.float64) * 0.5
    means = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(means, (1, 1, 1, 1), mode="circular"), 3, 1) * 2
    variances = torch.rand(8, generator=gen, dtype=torch.float64) * 0.2 + 0.02
    return GaussianMixture(means, variances)


def mixture_samples(model: GaussianMixture, num: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    comp = torch.randint(0, model.means.shape[0], (num,), generator=gen)
    noise = torch.randn(num, model.dim, generator=gen, dtype=torch.float64) * model.variances[comp, None].sqrt()
    return (model.means[comp] + noise).reshape(num, *model.sample_shape)


@pytest.fixture(scope="module")
def mixture_case():
    model = image_mixture()
    n, k = 60, 256
    lambdas = lambda_grid(SIGMA_MIN, SIGMA_MAX, n)
    data = mixture_samples(model, k, seed=1)
    records = torch.stack(
        [
            point_record(model, data, math.exp(-lam), point_generator(0, j), k, torch.device("cpu"))
            for j, lam in enumerate(lambdas)
        ]
    )
    est = statistics_from_records(records.numpy(), lambdas)
    stats = EmpiricalStatistics(est["l"], est["s"], est["b"], SIGMA_MIN, SIGMA_MAX)
    x = (
        torch.randn(64, *model.sample_shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        * SIGMA_MAX
    )
    reference = get_solver("heun").sample(model, x, get_sigmas("polynomial", 200, SIGMA_MIN, SIGMA_MAX))
    return model, stats, x, reference


def _rmse(a, b):
    return ((a - b) ** 2).mean().sqrt().item()


@pytest.mark.parametrize("nfe", range(5, 11))
def test_estimated_statistics_beat_data_prediction_on_a_mixture(mixture_case, nfe):
    # Heun with 200 steps is the reference: its RMSE against 1000 steps is 1.4e-4, far below the smallest gap
    # measured between the solvers compared here (1.2e-2, v3 against UniPC at NFE 10).
    model, stats, x, reference = mixture_case
    sigmas = get_sigmas("logsnr", nfe, SIGMA_MIN, SIGMA_MAX)
    ours = _rmse(V3.sample(model, x, sigmas, {"stats": stats}), reference)
    degenerate = constant_statistics(stats.num_intervals, stats.sample_shape, 1.0, 0.0)
    assert ours < _rmse(V3.sample(model, x, sigmas, {"stats": degenerate}), reference)
    assert ours < _rmse(taylor_2m(model, x, sigmas), reference)


@pytest.mark.parametrize("baseline", ["dpmpp", "unipc"])
def test_estimated_statistics_beat_registered_baselines_on_a_mixture(mixture_case, baseline):
    if baseline not in SOLVERS:
        pytest.skip(f"solver '{baseline}' is not registered on this branch")
    model, stats, x, reference = mixture_case
    spec = get_solver(baseline)
    for nfe in range(5, 11):
        sigmas = get_sigmas("logsnr", nfe, SIGMA_MIN, SIGMA_MAX)
        ours = _rmse(V3.sample(model, x, sigmas, {"stats": stats}), reference)
        assert ours < _rmse(spec.sample(model, x, sigmas), reference), f"NFE {nfe}"


def test_statistics_folder_path_is_not_accepted_by_the_pure_solver(tmp_path: Path):
    model, x = _toy()
    with pytest.raises(UserError, match="needs empirical model statistics"):
        V3.sample(model, x, get_sigmas("logsnr", 3, SIGMA_MIN, SIGMA_MAX), {"stats": str(tmp_path)})
