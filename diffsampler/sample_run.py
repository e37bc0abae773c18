"""`diffsampler sample`: one model, one solver, one NFE budget -> samples.npz, meta.json and a PNG in one folder."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from diffsampler.artefacts import read_artefacts
from diffsampler.atomic import atomic_dir, check_name, check_replaceable, save_npz
from diffsampler.config import SampleConfig, flat_dict, with_precision
from diffsampler.images import save_grid, save_scatter
from diffsampler.models import model_label
from diffsampler.run_setup import RunSetup, setup_run
from diffsampler.sampling import (
    Generation,
    GridPlan,
    decode,
    generate_sharded,
    model_flow_grid,
    plan_grid,
    prepared_options,
)
from diffsampler.schedule_file import is_schedule_path, warn_other_model
from diffsampler.solvers import SolverSpec, get_solver
from diffsampler.solvers.base import StepCallback


@dataclass(frozen=True)
class Drawn:
    """Samples of one (model, solver, NFE) setting: images (decoded for a latent model) and the latents, on the CPU
    in float32, with the grid, the solver options as resolved and the time taken."""

    samples: torch.Tensor
    latents: torch.Tensor | None
    plan: GridPlan
    options: dict[str, Any]
    seconds: float


@dataclass(frozen=True)
class SampleOutcome:
    """What `diffsampler sample` did: where, how many, at what cost."""

    folder: Path
    num_samples: int
    nfe: int
    steps: int
    schedule: str
    seconds: float


def _plan(cfg: SampleConfig, setup: RunSetup) -> tuple[SolverSpec, dict[str, Any], GridPlan]:
    spec = get_solver(cfg.solver)
    options = spec.resolve_options(cfg.options)
    read_artefacts(spec, options)
    if is_schedule_path(cfg.schedule):
        warn_other_model(str(cfg.schedule), setup.denoiser.content_hash(), spec.name)
    plan = plan_grid(
        spec,
        options,
        setup.sigma_min,
        setup.sigma_max,
        cfg.nfe,
        cfg.schedule,
        cfg.rho,
        cfg.sigmas,
        setup.denoiser.discrete_sigmas,
        model_flow_grid(setup.denoiser, cfg.shift),
    )
    return spec, options, plan


def draw(
    cfg: SampleConfig,
    setup: RunSetup,
    noise: torch.Tensor | None = None,
    callback: StepCallback | None = None,
    before: Callable[[GridPlan], None] | None = None,
) -> Drawn:
    """``cfg.num_samples`` samples of the set-up model (latents seeded per index, or ``noise``'s rows), all ranks'
    batches gathered; ``before`` runs once the grid is known, before any sampling (the CLI's output checks)."""
    spec, options, plan = _plan(cfg, setup)
    if before is not None:
        before(plan)
    denoiser = setup.denoiser
    run_options = prepared_options(spec, options, denoiser, plan)
    tic = time.perf_counter()
    job = Generation(
        denoiser,
        spec,
        run_options,
        plan,
        cfg.run.seed,
        cfg.run.batch_size,
        setup.device,
        getattr(torch, cfg.run.dtype),
        noise,
        callback,
    )
    samples = generate_sharded(job, range(cfg.num_samples), setup.world)
    seconds = time.perf_counter() - tic
    if not denoiser.latent or not setup.world.is_main:  # only the main rank writes, so only it decodes
        return Drawn(samples, None, plan, options, seconds)
    images = decode(denoiser, samples, cfg.run.batch_size, setup.device)
    return Drawn(images, samples, plan, options, seconds)


def run_sample(cfg: SampleConfig) -> SampleOutcome:
    """Generate ``cfg.num_samples`` samples and write samples.npz, meta.json and a PNG into one folder."""
    if cfg.name is not None:
        check_name(cfg.name)
    get_solver(cfg.solver)
    sigma_range = (cfg.sigma_min, cfg.sigma_max)
    setup = setup_run(cfg.model, cfg.run.device, sigma_range, cfg.trust_pickle, cfg.model_options, cfg.run.precision)
    cfg = with_precision(cfg, setup.precision)  # auto recorded as what it resolved to
    folders: list[Path] = []

    def check_folder(plan: GridPlan) -> None:
        name = cfg.name or f"{model_label(cfg.model)}-{cfg.solver}-nfe{plan.nfe}"
        folders.append(Path(cfg.out) / check_name(name))
        check_replaceable(folders[0], "sample")

    drawn = draw(cfg, setup, before=check_folder)
    plan, folder = drawn.plan, folders[0]
    outcome = SampleOutcome(folder, cfg.num_samples, plan.nfe, plan.steps, plan.schedule, drawn.seconds)
    if setup.world.is_main:
        _write(folder, cfg, setup, drawn)
    return outcome


def _write(folder: Path, cfg: SampleConfig, setup: RunSetup, drawn: Drawn) -> None:
    plan, samples, denoiser = drawn.plan, drawn.samples, setup.denoiser
    latents = {} if drawn.latents is None else {"latents": drawn.latents.numpy()}
    with atomic_dir(folder, "sample") as tmp:
        save_npz(
            tmp / "samples.npz",
            samples=samples.numpy(),
            sigmas=plan.sigmas.numpy(),
            indices=np.arange(cfg.num_samples),
            seed=np.int64(cfg.run.seed),
            **latents,
        )
        meta = {
            "config": flat_dict(cfg),
            "options": drawn.options,
            "model": denoiser.describe(),
            "solver": cfg.solver,
            "schedule": plan.schedule,
            "nfe": plan.nfe,
            "steps": plan.steps,
            "sigmas": plan.sigmas.tolist(),
            "seconds": drawn.seconds,
            "device": str(setup.device),
            "world_size": setup.world.size,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if samples.ndim == 4:
            save_grid(samples, tmp / "grid.png")
        elif denoiser.sample_shape == (2,):
            save_scatter(samples, tmp / "scatter.png")
