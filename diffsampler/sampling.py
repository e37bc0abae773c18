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
from diffsampler.errors import UserError
from diffsampler.latents import standard_normal
from diffsampler.models import Denoiser
from diffsampler.schedule_file import is_schedule_path, read_schedule, schedule_label, warn_other_nfe
from diffsampler.schedules import FlowGrid, get_sigmas, validate_sigmas
from diffsampler.solvers import SolverSpec

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
    A ``schedule`` ending in .json is a schedule file: its grid is used as it is (a warning if it costs another NFE).
    """
    if is_schedule_path(schedule):
        artefact = read_schedule(str(schedule))
        grid = validate_sigmas(artefact.sigmas)
        used = spec.nfe(artefact.steps, options, final_zero=float(grid[-1]) == 0.0)
        warn_other_nfe(artefact, str(schedule), used, nfe)
        return GridPlan(grid, schedule_label(str(schedule)), used)
    if sigmas is not None:
        grid = validate_sigmas(sigmas)
        used = spec.nfe(grid.numel() - 1, options, final_zero=float(grid[-1]) == 0.0)
        if nfe is not None and nfe != used:
            raise UserError(f"the explicit sigma grid costs {spec.name} {used} NFE, not the {nfe} asked for")
        return GridPlan(grid, "explicit", used)
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


def prepared_options(
    spec: SolverSpec, options: Mapping[str, Any], denoiser: Denoiser, plan: GridPlan
) -> dict[str, Any]:
    """Options with required artefacts checked against this model and grid and loaded (``diffsampler.artefacts``)."""
    context = {"model": denoiser.describe(), "nfe": plan.nfe, "schedule": plan.schedule, "sigmas": plan.sigmas.tolist()}
    return prepare_options(spec, options, context)


@dataclass(frozen=True)
class Generation:
    """What fixes the samples of any set of indices (model, solver with prepared options, grid, seed) and how they
    are computed (samples per network call, device, dtype of the state x)."""

    denoiser: Denoiser
    spec: SolverSpec
    options: Mapping[str, Any]
    plan: GridPlan
    seed: int
    batch_size: int
    device: torch.device
    dtype: torch.dtype


def generate(job: Generation, indices: range) -> torch.Tensor:
    """Samples for the given indices (latents seeded per index), on the CPU in float32.

    Checks that the model was called exactly ``plan.nfe`` times per batch and returned finite values.
    """
    denoiser, spec, plan = job.denoiser, job.spec, job.plan
    out = []
    for batch in distributed.batches(indices, job.batch_size):
        noise = standard_normal(batch, denoiser.sample_shape, job.seed)
        x = initial_state(noise, float(plan.sigmas[0])).to(job.device, job.dtype)
        denoiser.reset_calls()
        with torch.no_grad():
            y = spec.sample(denoiser, x, plan.sigmas, job.options)
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
