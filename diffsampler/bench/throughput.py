"""Throughput of our solvers against k-diffusion's samplers on the same network, and our overhead over the network.

Pairs: our ``euler`` against k-diffusion's ``sample_euler``, our ``dpmpp`` (order 2, midpoint, no lower-order final
step) against ``sample_dpmpp_2m``, on the same denoiser, latents, batch, precision and sigma grid (NFE + 1
polynomial sigmas from the model's sigma_max to sigma_min, one NFE a step). "bare network" is the NFE calls
D(x, sigma_i) alone. Each round times every method once in turn (after a warm-up round), so load changes hit all
alike; the summary is per-method medians of process CPU time (the work done, meaningful on a loaded CPU with one
thread) and of wall time, and medians of per-round ratios. Each solver is also timed with a zero-cost denoiser (a
fixed tensor), which isolates its own arithmetic: that time over the bare network's bounds the overhead.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from diffsampler.errors import UserError
from diffsampler.models import Denoiser
from diffsampler.progress import ProgressFn, report
from diffsampler.schedules import get_sigmas
from diffsampler.solvers import get_solver
from diffsampler.solvers.kdiffusion_samplers import k_sampling

Method = Callable[[], torch.Tensor]
PAIRS = (("euler (ours)", "sample_euler (k-diffusion)"), ("dpmpp 2M (ours)", "sample_dpmpp_2m (k-diffusion)"))
BARE = "bare network"


@dataclass(frozen=True)
class ThroughputSettings:
    """The batch, budget, rounds, network precision (float32 or bfloat16 autocast) and CPU threads of a run."""

    batch_size: int = 64
    nfe: int = 10
    repeats: int = 3
    precision: str = "float32"
    threads: int = 1
    solver_only_rounds: int = 20


@dataclass(frozen=True)
class MethodTime:
    """Medians over the rounds: process CPU seconds, wall seconds and samples per CPU second."""

    name: str
    cpu_seconds: float
    wall_seconds: float
    samples_per_second: float


@dataclass(frozen=True)
class PairResult:
    """Ours against k-diffusion: throughput ratio (>1: ours faster), overheads over the bare network, the largest
    difference of the outputs, and each solver's arithmetic alone (seconds, and as a fraction of the network's)."""

    ours: str
    theirs: str
    ratio: float
    overhead_ours: float
    overhead_theirs: float
    max_difference: float
    arithmetic_ours: float
    arithmetic_theirs: float
    arithmetic_fraction_ours: float
    arithmetic_fraction_theirs: float


@dataclass(frozen=True)
class ThroughputResult:
    settings: ThroughputSettings
    methods: list[MethodTime]
    pairs: list[PairResult]


class ZeroCostDenoiser:
    """D(x, sigma) = a fixed tensor: timing a solver with it measures the solver's own arithmetic alone."""

    def __init__(self, like: torch.Tensor) -> None:
        self.out = torch.zeros_like(like)

    def __call__(self, x: torch.Tensor, sigma: object, cond: object = None) -> torch.Tensor:
        return self.out


def methods(model: Any, x: torch.Tensor, sigmas: torch.Tensor) -> dict[str, Method]:
    """Name -> a call that samples the batch x on the grid ``sigmas`` (one NFE a step)."""
    sampling = k_sampling()
    k_sigmas = sigmas.to(torch.float32)
    euler, dpmpp = get_solver("euler"), get_solver("dpmpp")
    two_m = {"order": 2, "variant": "midpoint", "lower_order_final": False}
    grid = sigmas.tolist()

    def bare() -> torch.Tensor:
        out = x
        for s in grid[:-1]:
            out = model(x, s)
        return out

    return {
        BARE: bare,
        PAIRS[0][0]: lambda: euler.sample(model, x, sigmas),
        PAIRS[0][1]: lambda: sampling.sample_euler(model, x, k_sigmas, disable=True),
        PAIRS[1][0]: lambda: dpmpp.sample(model, x, sigmas, two_m),
        PAIRS[1][1]: lambda: sampling.sample_dpmpp_2m(model, x, k_sigmas, disable=True),
    }


def run_rounds(
    calls: dict[str, Method], repeats: int, precision: str, progress: ProgressFn | None = None
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, torch.Tensor]]:
    """Per-method CPU and wall seconds over ``repeats`` interleaved rounds, and each method's last output."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bfloat16" else contextlib.nullcontext()
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    wall: dict[str, list[float]] = {name: [] for name in calls}
    outputs: dict[str, torch.Tensor] = {}
    with torch.no_grad(), autocast:
        for name, fn in calls.items():  # warm-up round
            outputs[name] = fn()
        for round_ in range(repeats):
            report(progress, round_, repeats, "timing rounds")
            for name, fn in calls.items():
                tic_cpu, tic_wall = time.process_time(), time.perf_counter()
                outputs[name] = fn()
                cpu[name].append(time.process_time() - tic_cpu)
                wall[name].append(time.perf_counter() - tic_wall)
    report(progress, repeats, repeats, "timing rounds")
    return cpu, wall, outputs


def _pair(ours: str, theirs: str, cpu: dict[str, list[float]], outputs: dict, alone: dict[str, float]) -> PairResult:
    bare = statistics.median(cpu[BARE])
    return PairResult(
        ours,
        theirs,
        statistics.median(t / o for o, t in zip(cpu[ours], cpu[theirs])),
        statistics.median(o / b - 1 for o, b in zip(cpu[ours], cpu[BARE])),
        statistics.median(t / b - 1 for t, b in zip(cpu[theirs], cpu[BARE])),
        (outputs[ours].float() - outputs[theirs].float()).abs().max().item(),
        alone[ours],
        alone[theirs],
        alone[ours] / bare,
        alone[theirs] / bare,
    )


def compare_throughput(
    denoiser: Denoiser, settings: ThroughputSettings, progress: ProgressFn | None = None
) -> ThroughputResult:
    """Time every method on the CPU (latents seeded by 0, scaled by sigma_max) and compare the pairs."""
    if settings.precision not in ("float32", "bfloat16"):
        raise UserError(f"precision must be float32 or bfloat16, got '{settings.precision}'")
    if min(settings.batch_size, settings.nfe, settings.repeats, settings.threads) < 1:
        raise UserError("batch size, NFE, repeats and threads must each be at least 1")
    torch.set_num_threads(settings.threads)
    shape = (settings.batch_size, *denoiser.sample_shape)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * denoiser.sigma_max
    sigmas = get_sigmas("polynomial", settings.nfe, denoiser.sigma_min, denoiser.sigma_max)
    cpu, wall, outputs = run_rounds(methods(denoiser, x, sigmas), settings.repeats, settings.precision, progress)
    zero, _, _ = run_rounds(methods(ZeroCostDenoiser(x), x, sigmas), settings.solver_only_rounds, settings.precision)
    alone = {name: min(v) for name, v in zero.items()}
    times = [
        MethodTime(
            name, statistics.median(c), statistics.median(wall[name]), settings.batch_size / statistics.median(c)
        )
        for name, c in cpu.items()
    ]
    pairs = [_pair(ours, theirs, cpu, outputs, alone) for ours, theirs in PAIRS]
    return ThroughputResult(settings, times, pairs)
