"""`diffsampler search-schedule`: teacher, search, schedule file; and the cache the benchmark reuses."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from diffsampler import __version__
from diffsampler.atomic import check_own_file, check_path_names, check_writable_file
from diffsampler.config import (
    RunSettings,
    check_limit,
    check_nfe,
    check_samples,
    identity_values,
    recorded_precision,
    run_settings,
    with_precision,
)
from diffsampler.device import resolve_device
from diffsampler.errors import UserError, unknown_choice
from diffsampler.models import Denoiser, load_model, model_label
from diffsampler.run_setup import autocast_dtype, resolve_precision
from diffsampler.schedule_file import (
    ScheduleArtefact,
    grid_of,
    is_schedule_file,
    is_schedule_path,
    write_schedule,
)
from diffsampler.schedules import get_sigmas, polynomial
from diffsampler.search.gits import (
    CANDIDATES_PER_STEP,
    DEFAULT_COEFF,
    METRICS,
    gits_sigmas,
)
from diffsampler.search.ld3 import learn_grid
from diffsampler.search.teacher import latents, teacher_trajectory
from diffsampler.solvers import get_solver

METHODS = ("gits", "ld3")
DEFAULT_SAMPLES = {"gits": 256, "ld3": 100}
MAX_TEACHER_STEPS = 100_000
"""The most steps of the teacher's solve (GITS' fine grid, LD3's teacher)."""
MAX_ITERATIONS = 1_000_000
"""The most Adam steps of LD3."""
"""GITS: 256 warm-up trajectories (the paper's code); LD3: 100 teacher samples (the paper)."""
LD3_TEACHER_STEPS = 60
"""iPNDM steps of LD3's teacher (about the GITS teacher's 60 NFE at six steps)."""


@dataclass
class SearchConfig:
    """``diffsampler search-schedule``: one model, solver, NFE and method -> one schedule file."""

    model: str = "gmm-fmnist"
    method: str = "gits"
    solver: str = "ipndm"
    options: dict[str, Any] = field(default_factory=dict)
    nfe: int = 5
    num_samples: int | None = None
    teacher_steps: int | None = None
    metric: str = "dev"
    coeff: float = DEFAULT_COEFF
    init: str | None = None
    iterations: int = 100
    lr: float = 0.05
    slack: bool = True
    run: RunSettings = run_settings(seed=1, dtype="float64")
    out: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    """Options of the model: keywords for a python: model's NAME, and the toolbox's own (prediction, shape, ...)."""

    def validate(self) -> None:
        if self.method not in METHODS:
            raise unknown_choice("search method", self.method, METHODS)
        if self.metric not in METRICS:
            raise unknown_choice("GITS metric", self.metric, METRICS)
        if self.nfe < 1 or (self.num_samples is not None and self.num_samples < 1):
            raise UserError("nfe and num_samples must be at least 1")
        check_nfe(self.nfe)
        check_samples(self.num_samples)
        check_limit("teacher_steps", self.teacher_steps, MAX_TEACHER_STEPS, "steps of the teacher's solve")
        check_limit("iterations", self.iterations, MAX_ITERATIONS, "LD3's Adam steps")
        if self.iterations < 0 or self.lr <= 0 or self.coeff <= 0:
            raise UserError("iterations must be >= 0, lr and coeff positive")
        self.run.validate()

    def settings(self, teacher_steps: int | None = None) -> dict[str, Any]:
        """What the method depends on besides model, solver and NFE (recorded in the schedule file)."""
        common = {
            "num_samples": self.samples,
            "seed": self.run.seed,
            "teacher": "ipndm",
            "teacher_steps": teacher_steps or self.teacher_steps,
            "dtype": self.run.dtype,
            **recorded_precision(self.run.precision),
        }
        if self.method == "gits":
            return {**common, "metric": self.metric, "coeff": self.coeff, "candidates": "polynomial rho=7"}
        return {**common, "init": self.init, "iterations": self.iterations, "lr": self.lr, "slack": self.slack}

    @property
    def samples(self) -> int:
        return self.num_samples or DEFAULT_SAMPLES[self.method]


Progress = Callable[[str], None]


def _teacher_steps(cfg: SearchConfig, steps: int) -> int:
    if cfg.teacher_steps is not None:
        return cfg.teacher_steps
    return CANDIDATES_PER_STEP * steps if cfg.method == "gits" else LD3_TEACHER_STEPS


def _initial_grid(cfg: SearchConfig, default: str, steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """LD3's starting grid: a named schedule (the solver's own by default) or a schedule file (e.g. a GITS grid)."""
    if not is_schedule_path(cfg.init):
        return get_sigmas(cfg.init or default, steps, sigma_min, sigma_max)
    grid = grid_of(str(cfg.init))
    if grid.numel() != steps + 1 or float(grid[-1]) == 0:
        raise UserError(
            f"LD3's initial schedule {cfg.init} must have {steps} steps ending above 0, it has {grid.numel() - 1}"
        )
    return grid


def search_grid(cfg: SearchConfig, denoiser: Denoiser, progress: Progress | None = None) -> ScheduleArtefact:
    """Run the search for ``cfg`` on a loaded model and return the artefact (not written)."""
    tic = time.perf_counter()
    spec = get_solver(cfg.solver)
    options = spec.resolve_options(cfg.options)
    steps = spec.steps_for_nfe(cfg.nfe, options)
    teacher_steps = _teacher_steps(cfg, steps)
    if cfg.method == "gits" and teacher_steps < steps:
        raise UserError(f"GITS needs at least {steps} teacher steps (candidate intervals), got {teacher_steps}")
    device, dtype = resolve_device(cfg.run.device), getattr(torch, cfg.run.dtype)
    denoiser.to(device)
    sigma_min, sigma_max = denoiser.sigma_min, denoiser.sigma_max
    x = latents(denoiser.sample_shape, cfg.samples, cfg.run.seed, sigma_max, dtype, device)
    say = progress or (lambda _: None)
    say(f"teacher: iPNDM, {teacher_steps} steps, {cfg.samples} samples")
    traj = teacher_trajectory(denoiser, x, polynomial(teacher_steps, sigma_min, sigma_max), cfg.run.batch_size)
    extra: dict[str, Any] = {}
    if cfg.method == "gits":
        grid = gits_sigmas(traj, steps, cfg.metric, cfg.coeff)
    else:
        init = _initial_grid(cfg, spec.default_schedule, steps, sigma_min, sigma_max)
        result = learn_grid(
            spec,
            options,
            denoiser,
            x,
            traj.final,
            init,
            cfg.settings(),
            lambda it, loss: say(f"LD3 iteration {it}/{cfg.iterations}: loss {loss:.4g}"),
        )
        grid, extra = result.sigmas, {"initial_loss": result.initial_loss, "final_loss": result.final_loss}
    made_for = {
        "model": cfg.model,
        "model_sha256": denoiser.content_hash(),
        "solver": spec.name,
        "options": options,
        "nfe": cfg.nfe,
    }
    search = {**cfg.settings(teacher_steps), **extra, "diffsampler": __version__}
    return ScheduleArtefact(grid.tolist(), cfg.method, made_for, search, time.perf_counter() - tic)


def default_path(cfg: SearchConfig) -> Path:
    return Path("results/schedules") / f"{model_label(cfg.model)}-{cfg.solver}-{cfg.method}-nfe{cfg.nfe}.json"


def search_schedule(cfg: SearchConfig, progress: Progress | None = None) -> tuple[ScheduleArtefact, Path]:
    """Load the model, search, write the schedule file; returns the artefact and its path."""
    path = Path(cfg.out) if cfg.out else default_path(cfg)
    check_path_names(path)
    check_writable_file(path)
    check_own_file(path, is_schedule_file, "a schedule file")
    denoiser = load_model(cfg.model, options=cfg.model_options)
    cfg = with_precision(
        cfg, resolve_precision(cfg.run.precision, denoiser.supports_autocast, resolve_device(cfg.run.device))
    )
    denoiser.set_autocast(autocast_dtype(cfg.run.precision))
    artefact = search_grid(cfg, denoiser, progress)
    return artefact, write_schedule(path, artefact)


def cached_schedule(cfg: SearchConfig, denoiser: Denoiser, folder: Path, progress: Progress | None = None) -> Path:
    """The schedule file for ``cfg`` in ``folder``, keyed by model hash, solver, options, NFE and settings.

    The search runs only when that file is not there yet."""
    spec = get_solver(cfg.solver)
    key = {
        "model_sha256": denoiser.content_hash(),
        "method": cfg.method,
        "solver": spec.name,
        "options": spec.resolve_options(cfg.options),
        "nfe": cfg.nfe,
        **identity_values(cfg),
    }
    key.pop("out"), key.pop("model")
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = folder / f"{spec.name}-{cfg.method}-nfe{cfg.nfe}-{digest}.json"
    if not path.exists():
        write_schedule(path, search_grid(cfg, denoiser, progress))
    return path
