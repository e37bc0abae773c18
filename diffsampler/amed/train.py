"""Distillation of an AMED predictor (arXiv 2312.00094 section 3.4), step by step.

Per batch of latents, a teacher (Heun, DPM-Solver-2 or Euler) solves the ODE once, without
gradients, on the same schedule refined (M + 1)-fold, giving targets at the student's grid
points. The student then takes one AMED step per interval from its own previous output
(detached, with its multistep buffer detached), the loss is the mean over the batch of the
squared L2 distance to the teacher at t_{n+1}, and Adam takes one step per interval. Only the
predictor is trained; the gradient flows through the frozen model's intermediate evaluation.
With ``balance_intervals`` each interval's step descends log L_n instead of L_n (our choice, not the paper's).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from diffsampler import distributed
from diffsampler.amed.checkpoint import is_predictor, save_predictor
from diffsampler.amed.config import AmedTrainConfig
from diffsampler.amed.predictor import AMEDPredictor, PredictorConfig
from diffsampler.atomic import check_name, check_own_file, check_writable_file
from diffsampler.config import flat_dict
from diffsampler.errors import UserError
from diffsampler.models import Denoiser
from diffsampler.run_setup import setup_run
from diffsampler.sampling import GridPlan, plan_grid
from diffsampler.schedules import SCHEDULES, get_sigmas
from diffsampler.solvers import SolverSpec, get_solver
from diffsampler.solvers.amed import FALLBACK_FEATURE_DIM, AmedParams, Student, amed_interval, detach_history


@dataclass(frozen=True)
class StepReport:
    """One optimizer step: its index, the interval, the loss and the predicted parameters' statistics."""

    step: int
    total: int
    interval: int
    loss: float
    r_mean: float
    r_std: float
    c_mean: float
    c_std: float
    a_mean: float
    a_std: float

    def describe(self) -> str:
        """One line: interval, loss, and mean +- std of r, c and a over the batch."""
        return (
            f"interval {self.interval} loss {self.loss:.4g}  r {self.r_mean:.3f}+-{self.r_std:.3f}  "
            f"c {self.c_mean:.3f}+-{self.c_std:.3f}  a {self.a_mean:.3f}+-{self.a_std:.3f}"
        )


@dataclass
class TrainResult:
    """The trained predictor, the checkpoint metadata and the loss of every optimizer step."""

    predictor: AMEDPredictor
    meta: dict[str, Any]
    losses: list[float] = field(default_factory=list)


def feature_width(denoiser: Denoiser, device: torch.device, dtype: torch.dtype) -> tuple[int, str]:
    """Width of the predictor's feature input and its source, probed with one (uncounted) model call."""
    probe = torch.zeros((1, *denoiser.sample_shape), device=device, dtype=dtype)
    with torch.no_grad():
        denoiser(probe, denoiser.sigma_max)
    denoiser.reset_calls()
    features = getattr(denoiser, "last_features", None)
    if features is None:
        return FALLBACK_FEATURE_DIM, "pooled-state"
    return int(features.reshape(features.shape[0], -1).shape[1]), "model"


def teacher_grid(cfg: AmedTrainConfig, sigmas: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """The student's schedule with (M + 1) times the intervals; every (M + 1)-th point is a student point."""
    steps = sigmas.numel() - 1
    fine = get_sigmas(cfg.resolved_schedule, (cfg.teacher_m + 1) * steps, sigma_min, sigma_max, cfg.rho)
    coarse = fine[:: cfg.teacher_m + 1]
    if not torch.allclose(coarse, sigmas, rtol=1e-9, atol=0):
        raise UserError(
            f"schedule {cfg.resolved_schedule} refined {cfg.teacher_m + 1}-fold does not contain the student grid"
        )
    return fine


def _stats(v: torch.Tensor) -> tuple[float, float]:
    v = v.detach().double()
    return float(v.mean()), float(v.std(unbiased=False))


@dataclass(frozen=True)
class _Setup:
    """What one distillation trains against: the frozen model, the student grid and the teacher's finer one."""

    denoiser: Denoiser
    world: distributed.World
    device: torch.device
    dtype: torch.dtype
    sigma_min: float
    sigma_max: float
    plan: GridPlan
    fine: torch.Tensor
    teacher: SolverSpec
    precision: str
    """The network's precision, resolved (config auto -> float32 or bfloat16)."""


def _setup(cfg: AmedTrainConfig) -> _Setup:
    run = setup_run(
        cfg.model,
        cfg.run.device,
        (cfg.sigma_min, cfg.sigma_max),
        model_options=cfg.model_options,
        precision=cfg.run.precision,
    )
    world, device, sigma_min, sigma_max = run.world, run.device, run.sigma_min, run.sigma_max
    last_batch = cfg.num_latents % cfg.run.batch_size or cfg.run.batch_size
    if min(cfg.run.batch_size, last_batch) < world.size:
        raise UserError(
            f"every batch needs at least one latent per rank: batch_size {cfg.run.batch_size} and num_latents "
            f"{cfg.num_latents} leave a batch of {min(cfg.run.batch_size, last_batch)} for {world.size} ranks"
        )
    denoiser = run.denoiser.eval().requires_grad_(False)
    plan = plan_grid(
        get_solver(cfg.solver), {"afs": cfg.afs}, sigma_min, sigma_max, cfg.nfe, cfg.resolved_schedule, cfg.rho
    )
    fine = teacher_grid(cfg, plan.sigmas, sigma_min, sigma_max)
    return _Setup(
        denoiser,
        world,
        device,
        getattr(torch, cfg.run.dtype),
        sigma_min,
        sigma_max,
        plan,
        fine,
        get_solver(cfg.teacher),
        run.precision,
    )


def _teacher_targets(cfg: AmedTrainConfig, setup: _Setup, z: torch.Tensor) -> list[torch.Tensor]:
    """z and the teacher's solution at every student grid point after it (no gradients)."""
    m1 = cfg.teacher_m + 1
    with torch.no_grad():
        targets, x = [z], z
        for k in range(setup.plan.steps):
            x = setup.teacher.sample(setup.denoiser, x, setup.fine[k * m1 : (k + 1) * m1 + 1])
            targets.append(x)
    return targets


def interval_objective(loss: torch.Tensor, total: torch.Tensor, balance: bool) -> torch.Tensor:
    """What one interval's Adam step descends: this rank's share of the loss, or with ``balance`` that share
    divided by the detached total over ranks (the gradient of log L_n: every interval at unit scale)."""
    return loss / total.clamp_min(torch.finfo(total.dtype).tiny) if balance else loss


def _train_batch(
    cfg: AmedTrainConfig,
    setup: _Setup,
    predictor: AMEDPredictor,
    optimizer: torch.optim.Optimizer,
    z: torch.Tensor,
    batch: int,
) -> Iterator[tuple[int, float, AmedParams | None]]:
    """One Adam step per student interval on this rank's latents ``z`` of a batch of ``batch``:
    yields (interval, loss summed over ranks, the predicted parameters)."""
    targets = _teacher_targets(cfg, setup, z)
    grid, world = setup.plan.sigmas.tolist(), setup.world
    student = Student(cfg.student, cfg.afs, cfg.resolved_max_order, cfg.lower_order_final)
    x, history = z, []
    for n in range(setup.plan.steps):
        x_next, params = amed_interval(setup.denoiser, predictor, x, grid, n, history, student)
        loss = (x_next - targets[n + 1]).pow(2).flatten(1).sum(1).sum() / batch
        total = distributed.all_reduce_sum(loss.detach(), world)
        optimizer.zero_grad(set_to_none=True)
        interval_objective(loss, total, cfg.balance_intervals).backward()
        distributed.sum_gradients(predictor, world)
        for p in predictor.parameters():
            if p.grad is not None:
                torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)
        optimizer.step()
        x, history = x_next.detach(), detach_history(history)
        yield n, float(total), params


def _meta(
    cfg: AmedTrainConfig, setup: _Setup, predictor: AMEDPredictor, source: str, losses: list[float]
) -> dict[str, Any]:
    """The checkpoint's metadata: what the predictor was trained for and how (see ``amed.checkpoint``)."""
    plan = setup.plan
    return {
        "model_name": cfg.model,
        "model": setup.denoiser.describe(),
        "solver": cfg.solver,
        "base": None if cfg.student == "amed" else cfg.student,
        "nfe": plan.nfe,
        "steps": plan.steps,
        "afs": cfg.afs,
        "schedule": plan.schedule,
        "rho": SCHEDULES[plan.schedule].default_rho if cfg.rho is None else cfg.rho,
        "sigma_min": setup.sigma_min,
        "sigma_max": setup.sigma_max,
        "sigmas": plan.sigmas.tolist(),
        "max_order": cfg.resolved_max_order,
        "lower_order_final": cfg.lower_order_final,
        "teacher": cfg.teacher,
        "teacher_m": cfg.teacher_m,
        "teacher_nfe": setup.teacher.nfe(plan.steps * (cfg.teacher_m + 1)),
        "feature_source": source,
        "num_parameters": predictor.num_parameters,
        "config": flat_dict(cfg),
        "precision": setup.precision,
        "final_loss": sum(losses[-plan.steps :]) / plan.steps,
        "device": str(setup.device),
        "world_size": setup.world.size,
        "torch": str(torch.__version__),
    }


def train_amed(cfg: AmedTrainConfig, report: Callable[[StepReport], None] | None = None) -> TrainResult:
    """Distil a predictor for ``cfg``; ``report`` is called after every optimizer step.

    Under torchrun each rank takes a contiguous block of every batch; the loss (the batch mean) and its
    gradient are summed over ranks before each Adam step, so every rank holds the same predictor.
    """
    tic = time.perf_counter()
    setup = _setup(cfg)
    width, source = feature_width(setup.denoiser, setup.device, setup.dtype)
    pcfg = PredictorConfig(
        feature_dim=width,
        hidden_dim=cfg.hidden_dim,
        bottleneck_dim=cfg.bottleneck_dim,
        scale_dir=cfg.scale_dir,
        scale_time=cfg.scale_time,
    )
    predictor = AMEDPredictor(pcfg, seed=cfg.run.seed).to(setup.device).train()
    optimizer = torch.optim.Adam(predictor.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    gen = torch.Generator().manual_seed(cfg.run.seed)
    latents = torch.randn((cfg.num_latents, *setup.denoiser.sample_shape), generator=gen) * setup.sigma_max
    total = cfg.epochs * -(-cfg.num_latents // cfg.run.batch_size) * setup.plan.steps
    losses: list[float] = []
    for _ in range(cfg.epochs):
        order = torch.randperm(cfg.num_latents, generator=gen)
        for start in range(0, cfg.num_latents, cfg.run.batch_size):
            picked = order[start : start + cfg.run.batch_size]
            rows = distributed.my_rows(len(picked), setup.world)
            z = latents[picked[rows.start : rows.stop]].to(setup.device, setup.dtype)
            for n, loss, params in _train_batch(cfg, setup, predictor, optimizer, z, len(picked)):
                losses.append(loss)
                if report is not None and params is not None:
                    report(
                        StepReport(len(losses), total, n, loss, *_stats(params.r), *_stats(params.c), *_stats(params.a))
                    )
    predictor.eval().requires_grad_(False)
    meta = {**_meta(cfg, setup, predictor, source, losses), "training_seconds": time.perf_counter() - tic}
    return TrainResult(predictor, meta, losses)


def output_path(cfg: AmedTrainConfig) -> Path:
    """Where the checkpoint goes, refused in one line (before any work) when it cannot be written there."""
    if cfg.name is not None:
        check_name(cfg.name)
    path = Path(cfg.out) / cfg.file_name
    check_writable_file(path)
    check_own_file(path, is_predictor, "an AMED predictor")
    return path


def train_and_save(
    cfg: AmedTrainConfig, report: Callable[[StepReport], None] | None = None
) -> tuple[Path, TrainResult]:
    """Train, then write the checkpoint atomically to ``cfg.out / cfg.file_name`` (checked writable first)."""
    path = output_path(cfg)
    result = train_amed(cfg, report)
    if distributed.current().is_main:
        save_predictor(path, result.predictor, result.meta)
    return path, result
