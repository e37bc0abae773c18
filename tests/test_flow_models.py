"""Flow-matching models in the EDM form, checked against diffusers' flow schedulers on the exact velocity of Gaussian
data (closed-form flow map), and the start at t = 1 (sigma = inf) as the limit of each solver's steps."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from diffsampler.errors import UserError
from diffsampler.models import load_model
from diffsampler.models.flow import FlowDenoiser, FlowTime
from diffsampler.schedules import FlowGrid, get_sigmas
from diffsampler.solvers import get_solver

SHIFTS = [1.0, 3.0]
NFES = [5, 6, 7, 8]
LIMIT_SOLVERS = [
    ("euler", {}),
    ("dpmpp", {"order": 2}),
    ("dpmpp", {"order": 3}),
    ("unipc", {"order": 2}),
    ("unipc", {"order": 3}),
    ("ipndm", {}),
]
LARGE_SIGMAS = {"euler": (1e2, 1e4, 1e6), "ipndm": (1e2, 1e4, 1e6)}
"""sigma_0 of the limit test: Euler's x + (s_1 - s_0) d loses x's digits in float64 beyond ~1e8 (the cancellation the
limit avoids); the exponential integrators scale x by s_1 / s_0 and run to 1e100."""


@pytest.fixture(scope="module")
def model():
    return load_model("gauss-flow-2d")


def noise(dtype=torch.float64, n=6):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(dtype)


def flow_grid(model, shift, nfe, dynamic=False):
    grid = dataclasses.replace(model.flow_grid, shift=shift, dynamic=dynamic)
    return get_sigmas("flow", nfe, model.sigma_min, model.sigma_max, flow_grid=grid)


def flow_time(sigmas):
    """t = sigma / (1 + sigma), 1 at sigma = inf."""
    return torch.where(torch.isinf(sigmas), torch.ones_like(sigmas), sigmas / (1 + sigmas))


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_wrapper_is_the_posterior_mean_and_x_t_the_input(model):
    """D(x, sigma) = E[x0 | x] for Gaussian data (closed form in the EDM form: m + s^2 (x - m) / (s^2 + sigma^2))."""
    x = noise() * 3
    for sigma in (0.01, 1.0, 40.0):
        want = model.mean + model.std**2 * (x - model.mean) / (model.std**2 + sigma**2)
        assert torch.allclose(model(x, sigma), want, rtol=1e-12, atol=1e-12), sigma
    assert torch.allclose(model(x, math.inf), model.mean.expand_as(x), atol=0)  # t = 1: D = E[x0]


def test_time_scale_and_reversed_time_reach_the_network():
    seen = []

    def velocity(x_t, time, cond):
        seen.append(time.clone())
        return torch.full_like(x_t, 2.0)

    x = torch.ones(3, 2, dtype=torch.float64)
    sigma = 3.0  # t = 0.75, x_t = x / 4
    sd3 = FlowDenoiser(velocity, (2,), time=FlowTime(scale=1000.0))
    assert torch.allclose(sd3(x, sigma), x / 4 - 0.75 * 2.0)
    assert torch.allclose(seen[-1], torch.full((3,), 750.0, dtype=torch.float64))
    # reversed (t = 1 data): the network gets 1 - t and returns x0 - eps = -v
    reverse = FlowDenoiser(velocity, (2,), time=FlowTime(reverse=True))
    assert torch.allclose(reverse(x, sigma), x / 4 + 0.75 * 2.0)
    assert torch.allclose(seen[-1], torch.full((3,), 0.25, dtype=torch.float64))
    with pytest.raises(UserError, match="time_scale must be positive"):
        FlowTime(scale=0.0)


@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("nfe", NFES)
def test_flow_schedule_is_flowmatch_euler_sigmas(model, shift, nfe):
    """t_i of our grid = FlowMatchEulerDiscreteScheduler(shift).sigmas after set_timesteps(N), t_0 = 1 exactly; and with
    use_dynamic_shifting and mu, shift = exp(mu). diffusers rounds its grid to float32: 1e-7 absolute."""
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(nfe)
    ours = flow_grid(model, shift, nfe)
    assert ours[0] == math.inf and ours[-1] == 0 and ours.numel() == nfe + 1
    assert torch.allclose(flow_time(ours), scheduler.sigmas.double(), rtol=0, atol=1e-7)
    mu = math.log(shift) + 0.3
    dynamic = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    dynamic.set_timesteps(nfe, mu=mu)
    ours = flow_grid(model, math.exp(mu), nfe, dynamic=True)
    assert torch.allclose(flow_time(ours), dynamic.sigmas.double(), rtol=0, atol=1e-7)


def _velocity(model, x_t, t):
    return model.velocity(x_t, torch.as_tensor(t, dtype=torch.float64).reshape(1).expand(x_t.shape[0]), None)


@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("nfe", NFES)
def test_euler_on_flow_equals_flowmatch_euler_loop(model, shift, nfe):
    """Our Euler from sigma = inf on the flow grid = the FlowMatchEulerDiscreteScheduler loop on the same velocity and
    noise. diffusers steps in float32 (it upcasts the state to float32): the issue's 1e-5 (measured ~1e-7)."""
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(nfe)
    x = noise(torch.float32)
    for t in scheduler.timesteps:
        x = scheduler.step(_velocity(model, x, t / 1000), t, x).prev_sample
    model.reset_calls()
    ours = get_solver("euler").sample(model, noise(torch.float32), flow_grid(model, shift, nfe))
    assert model.calls == nfe
    assert rel(ours, x) < 1e-5, rel(ours, x)


@pytest.mark.parametrize(
    "name, scheduler_class", [("dpmpp", "DPMSolverMultistepScheduler"), ("unipc", "UniPCMultistepScheduler")]
)
@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("nfe", NFES)
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 5e-7)])
def test_multistep_equals_diffusers_flow_schedulers(model, name, scheduler_class, shift, nfe, dtype, tol):
    """dpmpp (2M, midpoint) and unipc (order 2, bh2) = diffusers' schedulers with use_flow_sigmas=True,
    prediction_type="flow_prediction" on their own grid (DPM: t_0 = shift(0.999); UniPC: t_0 = 1 - 1e-6, diffusers'
    cap) and the same latents: their x_t = noise at t_0 is our x = noise / (1 - t_0). The network is given the grid's
    t (diffusers' pipelines pass a timestep, an integer for DPM). float64: diffusers computes lambda from its float32
    sigmas in float32, so 5e-7 (measured <1e-7); float32: the issue's 1e-5."""
    diffusers = pytest.importorskip("diffusers")
    scheduler = getattr(diffusers, scheduler_class)(
        use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift, solver_order=2
    )
    scheduler.set_timesteps(nfe)
    x = noise(dtype)
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(_velocity(model, x, scheduler.sigmas[i]).to(dtype), t, x).prev_sample
    t_grid = scheduler.sigmas.double()
    model.reset_calls()
    ours = get_solver(name).sample(model, noise(dtype) / (1 - t_grid[0]).to(dtype), t_grid / (1 - t_grid), {"order": 2})
    assert model.calls == nfe and ours.dtype == dtype
    assert rel(ours, x) < tol, rel(ours, x)


@pytest.mark.parametrize("shift", SHIFTS)
def test_unipc_from_t1_is_the_limit_of_diffusers_capped_start(model, shift):
    """diffusers' UniPC moves t = 1 to 1 - 1e-6 (sigma = 1e6); our start at sigma = inf is the limit, which that cap
    approaches only like 1 / log(sigma_0) (the multistep ratios r to lambda_0 = -log sigma_0): measured 1e-5 - 8e-4
    relative at NFE 5-8, so the two are compared on the capped grid (equal) and the limit is checked below."""
    diffusers = pytest.importorskip("diffusers")
    grid = flow_grid(model, shift, 6)
    scheduler = diffusers.UniPCMultistepScheduler(
        use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=1.0, solver_order=2
    )
    scheduler.set_timesteps(sigmas=np.array(flow_time(grid)[:-1].tolist()))
    t_grid = scheduler.sigmas.double()
    assert t_grid[0] == pytest.approx(1 - 1e-6, abs=1e-7)  # diffusers' cap (float32)
    x = noise()
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(_velocity(model, x, scheduler.sigmas[i]), t, x).prev_sample
    capped = get_solver("unipc").sample(model, noise() / (1 - t_grid[0]), t_grid / (1 - t_grid), {"order": 2})
    assert rel(capped, x) < 5e-7
    limit = get_solver("unipc").sample(model, noise(), grid, {"order": 2})
    assert 1e-7 < rel(limit, x) < 1e-2  # not the same start, close


@pytest.mark.parametrize("name, options", LIMIT_SOLVERS)
def test_start_at_infinity_is_the_limit_of_large_sigma_max(model, name, options):
    """Each solver's run from sigma = inf is the limit of its run from sigma_0 = L, x = L noise, as L grows: the gap
    shrinks at least 10x over ``LARGE_SIGMAS`` (DDIM-type terms like 1 / L, multistep ratios like 1 / log L)."""
    grid = flow_grid(model, 3.0, 6)
    spec = get_solver(name)
    at_infinity = spec.sample(model, noise(), grid, options)
    gaps = []
    for big in LARGE_SIGMAS.get(name, (1e3, 1e10, 1e100)):
        finite = grid.clone()
        finite[0] = big
        gaps.append(rel(spec.sample(model, noise() * big, finite, options), at_infinity))
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < gaps[0] / 10, gaps


@pytest.mark.parametrize("name", ["heun", "dpm2", "deis", "ipndm_v"])
def test_solvers_without_a_finite_first_step_refuse_infinity(model, name):
    """These refuse the flow grid with a one-line reason. Heun's trapezoid weighs the infinite first interval by
    ~ sigma_0 (D(x_1) - D(x_0)) / (2 sigma_1): its result from sigma_0 = L grows like L (checked). DPM-Solver-2's
    midpoint sqrt(s_0 s_1) is infinite too (its limit needs dD/dt at t = 1); DEIS and iPNDM_v weigh by step ratios."""
    grid = flow_grid(model, 3.0, 4)
    with pytest.raises(UserError, match=f"{name} has no finite first step from sigma = inf"):
        get_solver(name).sample(model, noise(), grid)
    if name == "heun":
        sizes = []
        for big in (1e3, 1e6):
            finite = grid.clone()
            finite[0] = big
            sizes.append(get_solver(name).sample(model, noise() * big, finite).norm().item())
        assert sizes[1] > 100 * sizes[0], sizes
    with pytest.raises(UserError, match="variant bh2"):
        get_solver("unipc").sample(model, noise(), grid, {"variant": "bh1"})


@pytest.mark.parametrize("name, options", LIMIT_SOLVERS[:2] + [("unipc", {})])
def test_flow_grid_converges_to_the_exact_flow_map(model, name, options):
    """On Gaussian data the exact sample of noise eps is m + s eps: the error shrinks 4x or more from 8 to 64 steps."""
    exact = model.exact_sample(noise())
    errors = [rel(get_solver(name).sample(model, noise(), flow_grid(model, 3.0, n), options), exact) for n in (8, 64)]
    assert errors[1] < errors[0] / 4, errors


def test_bad_flow_input(model):
    with pytest.raises(UserError, match="shift must be a positive number"):
        FlowGrid(shift=0.0)
    with pytest.raises(UserError, match="shift must be a positive number"):
        FlowGrid(shift=-1.0)
    with pytest.raises(UserError, match="needs a flow-matching model"):
        get_sigmas("flow", 5, 0.002, 80.0)
    # other schedules work on flow models (finite sigma_max: shift (T - 1))
    grid = get_sigmas("polynomial", 5, model.sigma_min, model.sigma_max)
    assert (
        grid[0] == pytest.approx(3 * 999)
        and torch.isfinite(get_solver("heun").sample(model, noise() * grid[0], grid)).all()
    )


def test_flow_model_through_the_cli(tmp_path):
    from typer.testing import CliRunner

    from diffsampler.cli import app

    base = ["sample", "--model", "gauss-flow-2d", "--solver", "euler", "--schedule", "flow", "--nfe", "5"]
    base += ["--num-samples", "4", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, [*base, "--name", "s1", "--set", "shift=1"])
    assert result.exit_code == 0, result.output
    data = np.load(tmp_path / "s1" / "samples.npz")
    assert data["sigmas"][0] == np.inf and data["sigmas"][-1] == 0
    meta = json.loads((tmp_path / "s1" / "meta.json").read_text())
    assert meta["nfe"] == 5 and meta["schedule"] == "flow"
    for bad, message in (
        (["--set", "shift=0"], "shift must be positive"),
        (["--solver", "heun", "--nfe", "6"], "heun has no"),
    ):
        result = CliRunner().invoke(app, [*base, "--name", "bad", *bad])
        assert result.exit_code == 2 and message in result.output, result.output
    result = CliRunner().invoke(app, [*base[:2], "gmm-2d", *base[3:], "--name", "bad2", "--set", "shift=3"])
    assert result.exit_code == 2 and "shift applies to flow-matching models" in result.output, result.output


@pytest.mark.parametrize("name", ["euler", "dpmpp", "unipc", "ipndm"])
def test_afs_mean_from_t1_is_the_exact_first_evaluation(model, name):
    """At sigma = inf AFS's D = x - sigma (x - m) / sqrt(1 + sigma^2) tends to m, and the exact flow model's
    D(x, t = 1) = E[x0] = m too: afs=mean (m from the model's moments) gives the plain run's samples with one NFE
    fewer (float64; 1e-12). afs=True (m = 0) is another first step."""
    from diffsampler.sampling import GridPlan, prepared_options

    grid = flow_grid(model, 3.0, 6)
    spec = get_solver(name)
    plan = GridPlan(grid, "flow", spec.nfe(6, {"afs": "mean"}, final_zero=True))
    options = prepared_options(spec, spec.resolve_options({"afs": "mean"}), model, plan)
    model.reset_calls()
    plain = spec.sample(model, noise(), grid)
    plain_calls = model.calls
    model.reset_calls()
    with_mean = spec.sample(model, noise(), grid, options)
    assert model.calls == plain_calls - 1 == plan.nfe
    assert (with_mean - plain).abs().max() < 1e-12
    assert (spec.sample(model, noise(), grid, {"afs": True}) - plain).abs().max() > 1e-3


def test_callback_at_t1_hears_sigma_inf_and_the_noise(model):
    """Step 0 from sigma = inf reports sigma = inf, the stored state (the noise) and D(noise, inf) = the data mean."""
    heard = []
    grid = flow_grid(model, 3.0, 5)
    for name in ("euler", "dpmpp", "unipc", "ipndm"):
        heard.clear()
        get_solver(name).sample(model, noise(), grid, callback=heard.append)
        first = heard[0]
        assert [h["i"] for h in heard] == list(range(5)) and first["sigma"] == math.inf, name
        assert torch.equal(first["x"], noise()) and torch.allclose(first["denoised"], model.mean.expand(6, 2))
