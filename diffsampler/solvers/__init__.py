"""Solvers of the probability-flow ODE in the EDM form, and the registry name -> solver.

This package owns the step math only: a solver takes any callable D(x, sigma, cond), a tensor, a sigma grid and
plain options. It imports no model, AMED, EMS, benchmark or sampling code (tests/test_architecture.py checks);
artefacts named by options (predictor files, statistics folders) are loaded by ``diffsampler.artefacts``.
Adding a solver is one module with the function and one ``register_solver`` line here, or a plugin package
(entry point group ``diffsampler.solvers``, see ``diffsampler.plugins``). ``kdiffusion:sample_X`` names
k-diffusion's sampler ``sample_X`` (``diffsampler.solvers.kdiffusion_samplers``), registered when first looked up.
"""

from __future__ import annotations

from typing import Any, Callable

from diffsampler.errors import unknown_choice
from diffsampler.plugins import load_group
from diffsampler.solvers.amed import amed_plugin, amed_solver
from diffsampler.solvers.base import SolverSpec
from diffsampler.solvers.deis import deis
from diffsampler.solvers.dpm_solver_pp import dpmpp, dpmpp_published
from diffsampler.solvers.dpm_solver_v3 import dpm_solver_v3
from diffsampler.solvers.ipndm import ipndm, ipndm_v, ipndm_v_published
from diffsampler.solvers.kdiffusion_samplers import PREFIX as KDIFFUSION_PREFIX
from diffsampler.solvers.kdiffusion_samplers import evals_per_step, k_solver_fn
from diffsampler.solvers.runge_kutta import dpm_solver_2, euler, heun
from diffsampler.solvers.unipc import unipc

SOLVERS: dict[str, SolverSpec] = {}


def register_solver(
    name: str,
    sample_fn: Callable[..., Any],
    evals_per_step: int,
    default_schedule: str,
    summary: str,
    requires: tuple[str, ...] = (),
    infinite_start: str = "",
) -> SolverSpec:
    """Add a solver. Its options and their defaults are ``sample_fn``'s keyword-only parameters (see
    ``diffsampler.solvers.options``); ``requires`` names options that must be given (artefact paths, loaded by
    the hooks of ``diffsampler.artefacts``); ``infinite_start`` says how it starts from sigma = inf (flow models'
    t = 1), "" where its first step has no finite limit there."""
    spec = SolverSpec(name, sample_fn, evals_per_step, default_schedule, summary, requires, infinite_start)
    SOLVERS[name] = spec
    return spec


DDIM_LIMIT = "x_1 = s_1 x + D (the Euler / DDIM step's limit)"
register_solver(
    "euler", euler, 1, "polynomial", "Euler (= DDIM), first order, 1 NFE per step", infinite_start=DDIM_LIMIT
)
register_solver("heun", heun, 2, "polynomial", "Heun (EDM), second order, 2 NFE per step")
register_solver("dpm2", dpm_solver_2, 2, "polynomial", "DPM-Solver-2, geometric midpoint, 2 NFE per step")
register_solver(
    "dpmpp",
    dpmpp,
    1,
    "logsnr",
    "DPM-Solver++ multistep (data prediction), orders 1-3, 1 NFE per step",
    infinite_start=f"{DDIM_LIMIT}; D_0 then has weight 0 in the divided differences",
)
register_solver(
    "dpmpp_published",
    dpmpp_published,
    1,
    "logsnr",
    "DPM-Solver++ with the published 3M step (second order; the form of "
    "zju-pi/diff-sampler solver_utils.py and k-diffusion), 1 NFE per step",
    infinite_start=f"{DDIM_LIMIT}; D_0 then has weight 0 in the divided differences",
)
register_solver(
    "unipc",
    unipc,
    1,
    "logsnr",
    "UniPC (data prediction, bh1/bh2), predictor orders 1-3 with a free corrector, 1 NFE per step",
    infinite_start="bh2 only: x_1 = s_1 x + (D_0 + D_1) / 2 after the corrector; later, D_0's weight is 0",
)
register_solver(
    "deis", deis, 1, "time_quadratic", "DEIS tAB: Adams-Bashforth in VP time on eps, orders 1-3, 1 NFE per step"
)
register_solver(
    "ipndm",
    ipndm,
    1,
    "polynomial",
    "iPNDM: fixed Adams-Bashforth coefficients, orders 1-4, 1 NFE per step",
    infinite_start=f"{DDIM_LIMIT}, d_0 = x (the limit of (x - D) / sigma)",
)
register_solver(
    "ipndm_v", ipndm_v, 1, "polynomial", "iPNDM_v: variable-step Adams-Bashforth in sigma, orders 1-4, 1 NFE per step"
)
register_solver(
    "ipndm_v_published",
    ipndm_v_published,
    1,
    "polynomial",
    "iPNDM_v with the official code's order 3-4 weights (not Adams-Bashforth; first order at order 4), 1 NFE per step",
)
register_solver(
    "amed",
    amed_solver,
    2,
    "polynomial",
    "AMED-Solver: learned intermediate time per step (needs -o predictor=PATH), 2 NFE per step",
    requires=("predictor",),
)
register_solver(
    "amed-plugin",
    amed_plugin,
    2,
    "polynomial",
    "AMED-Plugin on euler / dpm2 / ipndm / dpmpp (-o predictor=PATH, base from it), 2 NFE per step",
    requires=("predictor",),
)
register_solver(
    "dpm-solver-v3",
    dpm_solver_v3,
    1,
    "logsnr",
    "DPM-Solver-v3, multistep predictor-corrector with empirical model statistics (-o stats=FOLDER), 1 NFE per step",
    requires=("stats",),
)


def load_plugins() -> None:
    """Add the solvers of installed plugins (and their prepare hooks) to ``SOLVERS``, once per process."""
    load_group("diffsampler.solvers", SOLVERS)


def _kdiffusion_solver(name: str) -> SolverSpec:
    """Register ``kdiffusion:sample_X``: k-diffusion's sampler with its NFE per step measured by a dry run."""
    function = name[len(KDIFFUSION_PREFIX) :]
    k = evals_per_step(function)
    return register_solver(name, k_solver_fn(function), k, "polynomial", f"k-diffusion's {function}, {k} NFE per step")


def get_solver(name: str) -> SolverSpec:
    """The registered solver of this name (plugins loaded first), or k-diffusion's ``kdiffusion:sample_X``."""
    load_plugins()
    if name not in SOLVERS and name.startswith(KDIFFUSION_PREFIX):
        return _kdiffusion_solver(name)
    if name not in SOLVERS:
        raise unknown_choice("solver", name, SOLVERS)
    return SOLVERS[name]


def is_solver(name: str) -> bool:
    """True when ``get_solver(name)`` names a solver (a registered one, a plugin's, or a ``kdiffusion:`` name)."""
    load_plugins()
    return name in SOLVERS or name.startswith(KDIFFUSION_PREFIX)


__all__ = ["SOLVERS", "SolverSpec", "get_solver", "is_solver", "load_plugins", "register_solver"]
