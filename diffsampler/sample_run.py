"""`diffsampler sample`: one model, one solver, one NFE budget -> samples.npz, meta.json and a PNG in one folder."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffsampler.atomic import atomic_dir, check_name, check_replaceable
from diffsampler.config import SampleConfig, flat_dict, with_precision
from diffsampler.images import save_grid, save_scatter
from diffsampler.models import model_label
from diffsampler.run_setup import setup_run
from diffsampler.sampling import Generation, decode, generate_sharded, model_flow_grid, plan_grid, prepared_options
from diffsampler.schedule_file import is_schedule_path, warn_other_model
from diffsampler.solvers import get_solver


@dataclass(frozen=True)
class SampleOutcome:
    """What `diffsampler sample` did: where, how many, at what cost."""

    folder: Path
    num_samples: int
    nfe: int
    steps: int
    schedule: str
    seconds: float


def run_sample(cfg: SampleConfig) -> SampleOutcome:
    """Generate ``cfg.num_samples`` samples and write samples.npz, meta.json and a PNG into one folder."""
    if cfg.name is not None:
        check_name(cfg.name)
    spec = get_solver(cfg.solver)
    options = spec.resolve_options(cfg.options)
    sigma_range = (cfg.sigma_min, cfg.sigma_max)
    setup = setup_run(cfg.model, cfg.run.device, sigma_range, cfg.trust_pickle, cfg.model_options, cfg.run.precision)
    denoiser, world, device = setup.denoiser, setup.world, setup.device
    cfg = with_precision(cfg, setup.precision)  # auto recorded as what it resolved to
    if is_schedule_path(cfg.schedule):
        warn_other_model(str(cfg.schedule), denoiser.content_hash(), spec.name)
    plan = plan_grid(
        spec,
        options,
        setup.sigma_min,
        setup.sigma_max,
        cfg.nfe,
        cfg.schedule,
        cfg.rho,
        cfg.sigmas,
        denoiser.discrete_sigmas,
        model_flow_grid(denoiser, cfg.shift),
    )
    name = cfg.name or f"{model_label(cfg.model)}-{cfg.solver}-nfe{plan.nfe}"
    folder = Path(cfg.out) / check_name(name)
    check_replaceable(folder, "sample")
    run_options = prepared_options(spec, options, denoiser, plan)
    tic = time.perf_counter()
    job = Generation(
        denoiser, spec, run_options, plan, cfg.run.seed, cfg.run.batch_size, device, getattr(torch, cfg.run.dtype)
    )
    samples = generate_sharded(job, range(cfg.num_samples), world)
    seconds = time.perf_counter() - tic
    outcome = SampleOutcome(folder, cfg.num_samples, plan.nfe, plan.steps, plan.schedule, seconds)
    if not world.is_main:
        return outcome
    latents = {"latents": samples.numpy()} if denoiser.latent else {}
    if denoiser.latent:
        samples = decode(denoiser, samples, cfg.run.batch_size, device)
    with atomic_dir(folder, "sample") as tmp:
        np.savez(
            tmp / "samples.npz",
            samples=samples.numpy(),
            sigmas=plan.sigmas.numpy(),
            indices=np.arange(cfg.num_samples),
            seed=np.int64(cfg.run.seed),
            **latents,
        )
        meta = {
            "config": flat_dict(cfg),
            "options": options,
            "model": denoiser.describe(),
            "solver": spec.name,
            "schedule": plan.schedule,
            "nfe": plan.nfe,
            "steps": plan.steps,
            "sigmas": plan.sigmas.tolist(),
            "seconds": seconds,
            "device": str(device),
            "world_size": world.size,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if samples.ndim == 4:
            save_grid(samples, tmp / "grid.png")
        elif denoiser.sample_shape == (2,):
            save_scatter(samples, tmp / "scatter.png")
    return outcome
