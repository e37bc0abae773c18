"""Composing a model, a solver and a sigma grid into samples: the generation every command shares.

What a benchmark cell's samples depend on (``diffsampler.codehash.SHARED``), so it holds no command or config
code: `diffsampler sample` itself is ``diffsampler.sample_run``."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping

import torch

from diffsampler import distributed
from diffsampler.artefacts import prepare_options
from diffsampler.data_mean import data_mean
from diffsampler.errors import UserError
from diffsampler.latents import standard_normal
from diffsampler.models import Denoiser
from diffsampler.schedule_file import is_schedule_path, read_schedule, schedule_label
from diffsampler.schedules import FlowGrid, get_sigmas, validate_sigmas
from diffsampler.solvers import SolverSpec
from diffsampler.solvers.base import StepCallback

DEFAULT_NFE = 10


@dataclass(frozen=True)
class GridPlan:
    """The sigma grid of one (solver, options, budget) cell and the NFE it costs."""

    sigmas: torch.Tensor
    schedule: str
    nfe: int

    @property
    def steps(self) -> int:
        return self.sigmas.numel() - 1


def plan_grid(
    spec: SolverSpec,
    options: Mapping[str, Any],
    sigma_min: float,
    sigma_max: float,
    nfe: int | None = None,
    schedule: str | None = None,
    rho: float | None = None,
    sigmas: list[float] | None = None,
    discrete_sigmas: torch.Tensor | None = None,
    flow_grid: FlowGrid | None = None,
) -> GridPlan:
    """The grid for an NFE budget on the solver's default (or the given) schedule, or an explicit one.

    ``discrete_sigmas`` is the model's training sigma table (``Denoiser.discrete_sigmas``), for ``discrete``;
    ``flow_grid`` a flow model's grid settings (``model_flow_grid``), for ``flow``.
    A ``schedule`` ending in .json is a schedule file and ``sigmas`` an explicit grid: either is used as it is, and
    an ``nfe`` (given: None means none was asked for) that the grid does not cost is refused, the same way for both.
    """
    if is_schedule_path(schedule):
        grid = validate_sigmas(read_schedule(str(schedule)).sigmas)
        used = _grid_cost(spec, options, grid, nfe, f"the schedule file {schedule}")
        return GridPlan(grid, schedule_label(str(schedule)), used)
    if sigmas is not None:
        grid = validate_sigmas(sigmas)
        return GridPlan(grid, "explicit", _grid_cost(spec, options, grid, nfe, "the explicit sigma grid"))
    budget = DEFAULT_NFE if nfe is None else nfe
    steps = spec.steps_for_nfe(budget, options)
    name = schedule or spec.default_schedule
    grid = get_sigmas(name, steps, sigma_min, sigma_max, rho, discrete_sigmas, flow_grid)
    spec.check_start(float(grid[0]))
    return GridPlan(grid, name, budget)


def model_flow_grid(denoiser: Denoiser, shift: float | None) -> FlowGrid | None:
    """The flow model's grid settings with the config key ``shift`` (None: the model's own) in place."""
    grid = denoiser.flow_grid
    if grid is None:
        if shift is not None:
            raise UserError(f"shift applies to flow-matching models only, not to {type(denoiser).__name__}; remove it")
        return None
    return grid if shift is None else replace(grid, shift=float(shift))


def initial_state(noise: torch.Tensor, sigma_max: float) -> torch.Tensor:
    """x at sigma_max = sigma_max * noise; at sigma_max = inf the state is stored as x / sigma, the noise itself."""
    return noise if math.isinf(sigma_max) else noise * sigma_max


def _grid_cost(spec: SolverSpec, options: Mapping[str, Any], grid: torch.Tensor, nfe: int | None, what: str) -> int:
    """The NFE ``grid`` costs the solver; a UserError when an asked-for ``nfe`` differs (the grid is never altered)."""
    used = spec.nfe(grid.numel() - 1, options, final_zero=float(grid[-1]) == 0.0)
    if nfe is not None and nfe != used:
        raise UserError(
            f"{what} costs {spec.name} {used} NFE, not the {nfe} asked for; leave --nfe out or give --nfe {used}"
        )
    return used


def prepared_options(
    spec: SolverSpec, options: Mapping[str, Any], denoiser: Denoiser, plan: GridPlan
) -> dict[str, Any]:
    """Options with required artefacts checked against this model and grid and loaded (``diffsampler.artefacts``),
    and ``afs`` "mean" replaced by the model's data mean (``diffsampler.data_mean``)."""
    context = {"model": denoiser.describe(), "nfe": plan.nfe, "schedule": plan.schedule, "sigmas": plan.sigmas.tolist()}
    prepared = prepare_options(spec, options, context)
    if isinstance(prepared.get("afs"), str) and prepared["afs"] == "mean":
        weights = next(iter(denoiser.parameters()), None) if isinstance(denoiser, torch.nn.Module) else None
        prepared["afs"] = data_mean(denoiser, torch.device("cpu") if weights is None else weights.device)
    return prepared


@dataclass(frozen=True)
class Generation:
    """What fixes the samples of any set of indices (model, solver with prepared options, grid, seed or the given
    standard-normal ``noise``, row i for sample i) and how they are computed (samples per network call, device,
    dtype of the state x); ``callback`` hears of every step of every batch."""

    denoiser: Denoiser
    spec: SolverSpec
    options: Mapping[str, Any]
    plan: GridPlan
    seed: int
    batch_size: int
    device: torch.device
    dtype: torch.dtype
    noise: torch.Tensor | None = None
    callback: StepCallback | None = None


def latents(job: Generation, batch: range) -> torch.Tensor:
    """The standard-normal latents of a batch of indices: seeded per index, or the given noise's rows."""
    if job.noise is None:
        return standard_normal(batch, job.denoiser.sample_shape, job.seed)
    return job.noise[batch.start : batch.stop].to(torch.float64)


def generate(job: Generation, indices: range) -> torch.Tensor:
    """Samples for the given indices (latents seeded per index), on the CPU in float32.

    Checks that the model was called exactly ``plan.nfe`` times per batch and returned finite values.
    """
    denoiser, spec, plan = job.denoiser, job.spec, job.plan
    out = []
    for batch in distributed.batches(indices, job.batch_size):
        x = initial_state(latents(job, batch), float(plan.sigmas[0])).to(job.device, job.dtype)
        denoiser.reset_calls()
        with torch.no_grad():
            y = spec.sample(denoiser, x, plan.sigmas, job.options, callback=job.callback)
        if denoiser.calls != plan.nfe:
            raise RuntimeError(f"{spec.name} used {denoiser.calls} NFE where {plan.nfe} were planned")
        if not torch.isfinite(y).all():
            raise UserError(
                f"{spec.name} produced NaN or infinite samples at NFE {plan.nfe}: "
                "the model returned non-finite values or the solver diverged"
            )
        out.append(y.float().cpu())
    return torch.cat(out)


def decode(denoiser: Denoiser, samples: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Images (CPU, float32) from a latent model's samples, decoded in batches."""
    with torch.no_grad():
        return torch.cat(
            [
                denoiser.decode(samples[i : i + batch_size].to(device)).float().cpu()
                for i in range(0, samples.shape[0], batch_size)
            ]
        )


def generate_sharded(job: Generation, indices: range, world: distributed.World) -> torch.Tensor:
    """``generate`` with the batches dealt across ranks (see ``diffsampler.distributed``); all samples on every rank."""
    mine = distributed.my_batches(indices, job.batch_size, world)
    failure: UserError | None = None
    try:
        parts = [generate(job, b) for b in mine]
    except UserError as exc:
        failure, parts = exc, []
    if distributed.any_rank(failure is not None, world):
        raise failure or UserError(f"{job.spec.name} at NFE {job.plan.nfe} failed on another rank (see its error)")
    local = torch.cat(parts) if parts else torch.empty((0, *job.denoiser.sample_shape))
    return distributed.gather_batches(local, indices, job.batch_size, world)
