"""k-diffusion's sampler functions as our solvers: ``kdiffusion:sample_dpm_2`` and its kin.

A k-diffusion sampler ``sample_X(model, x, sigmas, extra_args=None, callback=None, disable=None, ...)``
(crowsonkb/k-diffusion, ``k_diffusion/sampling.py``) calls ``model(x, sigma * s_in, **extra_args)`` for the denoised
estimate: our D(x, sigma) in the same EDM form (arXiv 2206.00364), so only the call is adapted. Its NFE accounting is
measured once by a dry run on a zero-cost denoiser (D = 0) on grids of 1 to 3 steps, above 0 and ending at 0: the
sampler is accepted only when it uses k evaluations a step (k - 1 fewer when the grid ends at 0, as ours), so every
budget is met exactly or refused. k-diffusion is imported lazily, without its package ``__init__`` (which needs its
training extras), from the installed distribution.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import sys
import types
from typing import Any, Callable

import torch

from diffsampler.errors import UserError, unknown_choice
from diffsampler.solvers.base import DenoiserFn, StepCallback, finish

PREFIX = "kdiffusion:"
GRID_ARGS = ("model", "x", "sigmas")
"""The leading parameters of a sampler that takes a sigma grid (``sample_dpm_fast`` and ``sample_dpm_adaptive``
take sigma_min, sigma_max and a step count instead, and are refused)."""
DRY_RUN_STEPS = (1, 2, 3)


def k_sampling() -> types.ModuleType:
    """``k_diffusion.sampling`` of the installed k-diffusion, imported without the package's ``__init__``."""
    if "k_diffusion" not in sys.modules:
        spec = importlib.util.find_spec("k_diffusion")
        if spec is None or spec.submodule_search_locations is None:
            raise UserError("k-diffusion is not installed: pip install k-diffusion (needed by kdiffusion: solvers)")
        package = types.ModuleType("k_diffusion")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec  # so that find_spec("k_diffusion") still answers
        sys.modules["k_diffusion"] = package
    return importlib.import_module("k_diffusion.sampling")


def k_sampler(function: str) -> Callable[..., torch.Tensor]:
    """The sampler function ``function`` of k-diffusion, checked to take (model, x, sigmas, ...)."""
    sampling = k_sampling()
    names = sorted(n for n in dir(sampling) if n.startswith("sample_"))
    if function not in names:
        raise unknown_choice("k-diffusion sampler", function, names)
    fn = getattr(sampling, function)
    if tuple(inspect.signature(fn).parameters)[:3] != GRID_ARGS:
        raise UserError(f"k-diffusion's {function} does not take a sigma grid (model, x, sigmas); choose another")
    return fn


class KModel:
    """Our D(x, sigma, cond) in k-diffusion's calling convention model(x, sigma * s_in, **extra_args)."""

    def __init__(self, denoiser: DenoiserFn, cond: Any) -> None:
        self.denoiser, self.cond = denoiser, cond

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args: Any) -> torch.Tensor:
        return self.denoiser(x, float(sigma.reshape(-1)[0]), self.cond)


def run_k_sampler(
    fn: Callable[..., torch.Tensor],
    denoiser: DenoiserFn,
    x: torch.Tensor,
    sigmas: list[float],
    cond: Any,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """One k-diffusion sampler solve from x at sigmas[0] (float64 grid on x's device, progress bar off); its own
    callback is ours (the same dict)."""
    grid = torch.tensor(sigmas, dtype=torch.float64, device=x.device)
    return fn(KModel(denoiser, cond), x, grid, disable=True, callback=callback)


def _count(fn: Callable[..., torch.Tensor], steps: int, to_zero: bool) -> int:
    """Evaluations of one solve on a zero denoiser: ``steps`` log-uniform steps from 80, one more to 0 when asked."""
    calls = [0]

    def zero(x: torch.Tensor, sigma: float, cond: Any = None) -> torch.Tensor:
        calls[0] += 1
        return torch.zeros_like(x)

    grid = torch.logspace(torch.log10(torch.tensor(80.0)), -2.7, steps + 1, dtype=torch.float64).tolist()
    with torch.random.fork_rng():
        run_k_sampler(fn, zero, torch.zeros(1, 2, dtype=torch.float64), grid + [0.0] * to_zero, None)
    return calls[0]


@functools.lru_cache(maxsize=None)
def evals_per_step(function: str) -> int:
    """k: the sampler's evaluations per step, from dry runs; a UserError when they are not k per step."""
    fn = k_sampler(function)
    try:
        counts = {(n, z): _count(fn, n, z) for n in DRY_RUN_STEPS for z in (False, True)}
    except Exception as exc:  # noqa: BLE001 - whatever stops the dry run stops the solver
        raise UserError(f"k-diffusion's {function} failed a dry run ({type(exc).__name__}: {exc})") from None
    k = counts[(1, False)]
    if k < 1 or any(c != k * (n + z) - (k - 1) * z for (n, z), c in counts.items()):
        raise UserError(
            f"k-diffusion's {function} does not use a fixed number of evaluations per step ({counts}); "
            "its NFE cannot be accounted, choose another sampler"
        )
    return k


def k_solver_fn(function: str) -> Callable[..., torch.Tensor]:
    """Our solver signature around k-diffusion's ``function`` (no AFS: its first step evaluates the model)."""
    fn = k_sampler(function)

    def sample(
        denoiser: DenoiserFn,
        x: torch.Tensor,
        sigmas: list[float],
        *,
        cond: Any = None,
        callback: StepCallback | None = None,
        afs: bool = False,
        denoise_to_zero: bool = False,
    ) -> torch.Tensor:
        if afs:
            raise UserError(f"kdiffusion:{function} has no analytical first step; set afs=false")
        x = run_k_sampler(fn, denoiser, x, sigmas, cond, callback)
        return finish(denoiser, x, sigmas, denoise_to_zero, cond)

    sample.__name__ = sample.__qualname__ = function
    sample.__doc__ = f"k-diffusion's {function} (its docstring: {(fn.__doc__ or '').strip()})"
    return sample
