"""Every registered solver as a k-diffusion sampler function, and named or learned schedules as its sigma tensors.

``sample_<solver>(model, x, sigmas, extra_args=None, callback=None, disable=None, **options)`` exists for every
solver of the registry, plugins' included (names with ``-`` become ``_``: ``sample_amed_plugin``,
``sample_dpm_solver_v3``). The conventions are k-diffusion's (crowsonkb/k-diffusion, ``k_diffusion/sampling.py``):
``x`` is given at ``sigmas[0]`` (already scaled by it), ``sigmas`` usually ends with 0, ``model(x, sigma * s_in,
**extra_args)`` returns the denoised image D(x, sigma) (the EDM form, arXiv 2206.00364, as ours), and ``callback``
receives ``{"x", "i", "sigma", "sigma_hat", "denoised"}`` for each step i that evaluates the model at sigmas[i]
(a step whose first evaluation AFS replaces reports nothing). ``options`` are the solver's options
(``diffsampler list``), e.g. ``sample_dpmpp(..., order=2, variant="midpoint")`` is DPM-Solver++(2M). ``disable``
(k-diffusion's progress bar switch) is accepted and unused: these functions draw no progress bar.

The reverse direction, k-diffusion's samplers as our solvers (``--solvers kdiffusion:sample_dpm_2``), is
``diffsampler.solvers.kdiffusion_samplers``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import torch

from diffsampler.artefacts import prepare_options
from diffsampler.errors import UserError, unknown_choice
from diffsampler.schedule_file import is_schedule_path, read_schedule
from diffsampler.schedules import SCHEDULES, get_sigmas, load_plugins, validate_sigmas
from diffsampler.solvers import SOLVERS, get_solver
from diffsampler.solvers import load_plugins as load_solver_plugins

EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.002, 80.0
"""The sigma range of ``load_sigmas`` when none is given (EDM's, k-diffusion's usual for EDM models)."""
KModel = Callable[..., torch.Tensor]
"""model(x, sigma * s_in, **extra_args) -> denoised."""
Callback = Callable[[dict[str, Any]], Any]


class KSampler(Protocol):
    """A k-diffusion sampler function."""

    def __call__(
        self,
        model: KModel,
        x: torch.Tensor,
        sigmas: torch.Tensor,
        extra_args: Mapping[str, Any] | None = None,
        callback: Callback | None = None,
        disable: bool | None = None,
        **options: Any,
    ) -> torch.Tensor: ...


class StepReporter:
    """``model`` as our D(x, sigma, cond), calling ``callback`` once per step with k-diffusion's dict.

    The record of step i is the last evaluation at sigmas[i] before the solver evaluates anywhere else (so Heun's
    corrector at sigmas[i + 1] is replaced by step i + 1's own first evaluation there); it is sent when the next
    record starts or the solve ends.
    """

    def __init__(
        self, model: KModel, extra_args: Mapping[str, Any], sigmas: torch.Tensor, callback: Callback | None
    ) -> None:
        self.model, self.extra_args, self.sigmas, self.callback = model, dict(extra_args), sigmas, callback
        grid = sigmas.tolist()
        self.step_of = {s: i for i, s in reversed(list(enumerate(grid[:-1])))}
        self.pending: dict[str, Any] | None = None
        self.sent = -1

    def __call__(self, x: torch.Tensor, sigma: Any, cond: Any = None) -> torch.Tensor:
        denoised = self.model(x, float(sigma) * x.new_ones([x.shape[0]]), **self.extra_args)
        if self.callback is not None:
            i = self.step_of.get(float(sigma))
            if self.pending is not None and self.pending["i"] != i:
                self.flush()
            if i is not None and i > self.sent:
                s = self.sigmas[i]
                self.pending = {"x": x, "i": i, "sigma": s, "sigma_hat": s, "denoised": denoised}
        return denoised

    def flush(self) -> None:
        """Send the pending step record."""
        if self.pending is not None and self.callback is not None:
            self.callback(self.pending)
            self.sent = self.pending["i"]
        self.pending = None


def _context(model: KModel, nfe: int, sigmas: torch.Tensor) -> dict[str, Any]:
    """What a prepare hook checks artefacts against: the model's ``describe()`` when it is one of ours."""
    describe = getattr(model, "describe", None)
    info = describe() if callable(describe) else {"class": type(model).__name__}
    return {"model": info, "nfe": nfe, "schedule": "explicit", "sigmas": sigmas.tolist()}


def k_solve(
    solver: str,
    model: KModel,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: Mapping[str, Any] | None = None,
    callback: Callback | None = None,
    options: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Solve with ``solver`` from x at sigmas[0] to sigmas[-1] in k-diffusion's conventions (module docstring)."""
    spec = get_solver(solver)
    grid = validate_sigmas(sigmas.detach().cpu())
    opts = spec.resolve_options(options)
    nfe = spec.nfe(grid.numel() - 1, opts, final_zero=float(grid[-1]) == 0.0)
    reporter = StepReporter(model, extra_args or {}, sigmas, callback)
    opts = prepare_options(spec, opts, _context(model, nfe, grid))
    out = spec.sample(reporter, x, grid, opts)
    reporter.flush()
    return out


def sampler(solver: str) -> KSampler:
    """The k-diffusion sampler function of a registered solver (looked up when called, so plugins may add it)."""

    def sample(
        model: KModel,
        x: torch.Tensor,
        sigmas: torch.Tensor,
        extra_args: Mapping[str, Any] | None = None,
        callback: Callback | None = None,
        disable: bool | None = None,
        **options: Any,
    ) -> torch.Tensor:
        return k_solve(solver, model, x, sigmas, extra_args, callback, options)

    sample.__name__ = sample.__qualname__ = function_name(solver)
    sample.__doc__ = f"Solver '{solver}' in k-diffusion's sampler signature (see diffsampler.kdiffusion)."
    return sample


def function_name(solver: str) -> str:
    """``sample_`` + the solver's name with ``-`` as ``_``."""
    return "sample_" + solver.replace("-", "_")


def _solver_of(name: str) -> str | None:
    """The registered solver whose function is ``name`` (plugins loaded first)."""
    load_solver_plugins()
    return next((s for s in SOLVERS if ":" not in s and function_name(s) == name), None)


def load_sigmas(
    schedule: str | Path,
    n: int | None = None,
    sigma_min: float = EDM_SIGMA_MIN,
    sigma_max: float = EDM_SIGMA_MAX,
    rho: float | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A k-diffusion sigma tensor (float64, descending, ending with 0) of a named schedule or a schedule file.

    A named schedule gives ``n`` sigmas from sigma_max to sigma_min and the final 0 (k-diffusion's
    ``get_sigmas_karras(n, ...)`` convention: ``polynomial`` with rho = 7 is that grid). A schedule file (GITS, LD3,
    AYS or any grid written by ``diffsampler search-schedule``) gives its own sigmas with 0 appended when it ends
    above 0 (k-diffusion's samplers then take the last step to 0); ``n``, if given, must be its number of sigmas.
    """
    if isinstance(schedule, Path) or is_schedule_path(schedule):
        grid = torch.tensor(read_schedule(schedule).sigmas, dtype=torch.float64)
        if n is not None and n != grid.numel():
            raise UserError(f"schedule file {schedule} holds {grid.numel()} sigmas, not n={n}; leave n out")
    else:
        load_plugins()
        if schedule not in SCHEDULES:
            raise unknown_choice("schedule", schedule, [*SCHEDULES, "PATH.json"])
        if n is None or n < 2:
            raise UserError(f"load_sigmas('{schedule}') needs n >= 2 sigmas above 0, got n={n}")
        grid = get_sigmas(schedule, n - 1, sigma_min, sigma_max, rho)
    if float(grid[-1]) > 0:
        grid = torch.cat([grid, grid.new_zeros(1)])
    return grid.to(device)


sample_euler = sampler("euler")
sample_heun = sampler("heun")
sample_dpm2 = sampler("dpm2")
sample_dpmpp = sampler("dpmpp")
sample_dpmpp_published = sampler("dpmpp_published")
sample_unipc = sampler("unipc")
sample_deis = sampler("deis")
sample_ipndm = sampler("ipndm")
sample_ipndm_v = sampler("ipndm_v")
sample_ipndm_v_published = sampler("ipndm_v_published")
sample_amed = sampler("amed")
sample_amed_plugin = sampler("amed-plugin")
sample_dpm_solver_v3 = sampler("dpm-solver-v3")


def __getattr__(name: str) -> KSampler:
    """``sample_<solver>`` of a solver without an explicit line above (a plugin's)."""
    solver = _solver_of(name) if name.startswith("sample_") else None
    if solver is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return sampler(solver)


def __dir__() -> list[str]:
    load_solver_plugins()
    return sorted({*globals(), *(function_name(s) for s in SOLVERS if ":" not in s)})
