"""Solvers of the probability-flow ODE in the EDM form, and the registry name -> solver."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from diffsampler.errors import unknown_choice
from diffsampler.solvers.base import PrepareFn, SolverSpec
from diffsampler.solvers.dpm_solver_v3 import V3_OPTIONS, dpm_solver_v3
from diffsampler.solvers.runge_kutta import dpm_solver_2, euler, heun

SOLVERS: dict[str, SolverSpec] = {}


def register_solver(
    name: str,
    sample_fn: Callable[..., Any],
    evals_per_step: int,
    default_schedule: str,
    summary: str,
    options: Mapping[str, Any] | None = None,
    requires: tuple[str, ...] = (),
    prepare: PrepareFn | None = None,
) -> SolverSpec:
    """Add a solver; ``requires`` names options that must be given (artefact paths), ``prepare`` loads them."""
    spec = SolverSpec(name, sample_fn, evals_per_step, default_schedule, summary, dict(options or {}), requires, prepare)
    SOLVERS[name] = spec
    return spec


register_solver("euler", euler, 1, "polynomial", "Euler (= DDIM), first order, 1 NFE per step")
register_solver("heun", heun, 2, "polynomial", "Heun (EDM), second order, 2 NFE per step")
register_solver("dpm2", dpm_solver_2, 2, "polynomial", "DPM-Solver-2, geometric midpoint, 2 NFE per step", {"r": 0.5})


def _prepare_dpm_solver_v3(options: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    from diffsampler.ems.format import prepare_statistics

    return prepare_statistics(options, context)


register_solver(
    "dpm-solver-v3",
    dpm_solver_v3,
    1,
    "logsnr",
    "DPM-Solver-v3, multistep predictor-corrector with empirical model statistics (-o stats=FOLDER), 1 NFE per step",
    V3_OPTIONS,
    requires=("stats",),
    prepare=_prepare_dpm_solver_v3,
)


def get_solver(name: str) -> SolverSpec:
    """The registered solver of this name."""
    if name not in SOLVERS:
        raise unknown_choice("solver", name, SOLVERS)
    return SOLVERS[name]


__all__ = ["SOLVERS", "SolverSpec", "get_solver", "register_solver"]
