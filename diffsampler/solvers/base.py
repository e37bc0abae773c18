"""Solver specification, exact NFE accounting both ways, and shared step helpers.

NFE (network function evaluations) is the unit of cost. A solver that evaluates the network
``k`` times per step uses ``k * steps`` NFE, less one with AFS (the analytical first step
replaces the first evaluation), less ``k - 1`` when the grid ends at sigma = 0 (the last step
is then an Euler step), plus one with ``denoise_to_zero`` (a final x = D(x, sigma_min)).

A grid may start at sigma = inf (t = 1 of a flow-matching model, where diffusers' flow schedulers start). The state
there is stored divided by sigma (x / sigma, the noise: what every model's input scaling tends to), and a solver
that allows it (``SolverSpec.infinite_start``) takes the limit sigma_0 -> inf of its own steps: the first step is
x_1 = sigma_1 x / sigma + D(x, inf) (DDIM's (s_1 / s_0) x + (1 - s_1 / s_0) D in the limit), and later steps drop
the terms of sigma_0 that the limit sends to zero. Solvers whose first step has no finite limit refuse such grids.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Union

import torch

from diffsampler.errors import UserError
from diffsampler.solvers.options import Option, check_options, signature_options

THRESHOLD_QUANTILE = 0.995
"""Quantile of |D| used by dynamic thresholding (Imagen, arXiv 2205.11487; the value of
zju-pi/diff-sampler, diff-solvers-main/solver_utils.py::dynamic_thresholding_fn)."""

Afs = Union[bool, Literal["mean"], torch.Tensor]
"""The ``afs`` option: False, True (AFS with D(x, sigma_max) = 0), "mean" (with D = the data mean, filled in by
the sampling layer, ``diffsampler.data_mean``) or that mean itself as a tensor broadcastable to x."""

SampleFn = Callable[..., torch.Tensor]
StepCallback = Callable[[dict[str, Any]], None]
"""Called once per step with k-diffusion's callback contents: {"x": the state at the step's start, "i": the step
index, "sigma" and "sigma_hat": sigmas[i] (a float; no churn here), "denoised": D(x, sigma) there}. On a grid from
sigma = inf, step 0 reports sigma = inf and the stored state x / sigma (the noise), as the solvers hold it."""
DenoiserFn = Callable[..., torch.Tensor]
"""Any callable D(x, sigma, cond) -> x0_hat (solvers never import models)."""


@dataclass(frozen=True)
class SolverSpec:
    """A registered solver: its sampling function, cost per step, default schedule and the options that
    must be given (``requires``); its options and their defaults are the function's keyword-only parameters."""

    name: str
    sample_fn: SampleFn
    evals_per_step: int
    default_schedule: str
    summary: str
    requires: tuple[str, ...] = ()
    infinite_start: str = ""
    """How the solver starts from sigma = inf (the limit of its first step, one line), or "" where it cannot."""
    option_specs: Mapping[str, Option] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "option_specs", signature_options(self.sample_fn))

    @property
    def options(self) -> dict[str, Any]:
        """Every option with its default."""
        return {name: option.default for name, option in self.option_specs.items()}

    @property
    def training_free(self) -> bool:
        """True when the solver needs no trained or estimated artefact (predictor, statistics)."""
        return not self.requires

    def resolve_options(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults merged with ``options``; an unknown name or a value the signature does not accept is an error."""
        return check_options(self.name, self.option_specs, options)

    def nfe(self, num_steps: int, options: Mapping[str, Any] | None = None, final_zero: bool = False) -> int:
        """Network evaluations used by ``num_steps`` steps with these options."""
        opts = self.resolve_options(options)
        return (
            self.evals_per_step * num_steps
            - int(afs_on(opts["afs"]))
            - (self.evals_per_step - 1) * int(final_zero)
            + int(bool(opts["denoise_to_zero"]))
        )

    def steps_for_nfe(self, nfe: int, options: Mapping[str, Any] | None = None) -> int:
        """The number of steps that uses exactly ``nfe`` evaluations on a grid ending above 0."""
        opts = self.resolve_options(options)
        if nfe < 1:
            raise UserError(f"NFE must be at least 1, got {nfe}")
        afs = afs_on(opts["afs"])
        raw = nfe + int(afs) - int(bool(opts["denoise_to_zero"]))
        if raw % self.evals_per_step:
            other = "true" if not afs else "false"
            raise UserError(
                f"{self.name} uses {self.evals_per_step} NFE per step: NFE {nfe} cannot be met exactly "
                f"with afs={str(afs).lower()}; choose another NFE or set afs={other}"
            )
        steps = raw // self.evals_per_step
        if steps < 1:
            raise UserError(f"{self.name} cannot take a step with NFE {nfe} and these options")
        return steps

    def check_start(self, sigma_max: float) -> None:
        """Refuse a grid from sigma = inf when the solver's first step has no finite limit there."""
        if math.isinf(sigma_max) and not self.infinite_start:
            raise UserError(
                f"{self.name} has no finite first step from sigma = inf (t = 1; its step weighs or evaluates "
                "inside the infinite interval): use euler, dpmpp, unipc or ipndm on this grid, or a schedule with a "
                "finite sigma_max"
            )

    def sample(
        self,
        denoiser: DenoiserFn,
        x: torch.Tensor,
        sigmas: torch.Tensor,
        options: Mapping[str, Any] | None = None,
        cond: Any = None,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """Solve the probability-flow ODE from x at sigmas[0] to sigmas[-1]; ``callback`` hears of every step."""
        opts = self.resolve_options(options)
        grid = [float(s) for s in sigmas]
        if opts["denoise_to_zero"] and grid[-1] == 0:
            raise UserError("denoise_to_zero needs a grid ending above 0")
        self.check_start(grid[0])
        hook = {} if callback is None else {"callback": callback}  # solvers without a hook run without one
        if hook and "callback" not in inspect.signature(inspect.unwrap(self.sample_fn)).parameters:
            raise UserError(f"solver {self.name} takes no per-step callback (a plugin's solver may not)")
        return self.sample_fn(denoiser, x, grid, cond=cond, **hook, **opts)


def report_step(callback: StepCallback | None, i: int, sigma: float, x: torch.Tensor, denoised: torch.Tensor) -> None:
    """Tell ``callback`` (if any) of step i: the state x at sigma and the denoised estimate there."""
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})


def report_derivative(callback: StepCallback | None, i: int, sigma: float, x: torch.Tensor, d: torch.Tensor) -> None:
    """``report_step`` from the derivative d = (x - D) / sigma (D = x - sigma d, computed only for a callback)."""
    if callback is not None:
        report_step(callback, i, sigma, x, x - sigma * d)


def rescale(x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """(sigma_next / sigma) x, the linear part of DDIM-type steps; sigma_next x at sigma = inf (x stored as x /
    sigma)."""
    return sigma_next * x if math.isinf(sigma) else (sigma_next / sigma) * x


def derivative(denoiser: DenoiserFn, x: torch.Tensor, sigma: float, cond: Any = None) -> torch.Tensor:
    """dx/dsigma = (x - D(x, sigma)) / sigma: the probability-flow ODE (EDM eq. 3)."""
    return (x - denoiser(x, sigma, cond)) / sigma


def afs_on(afs: Afs) -> bool:
    """Whether the ``afs`` option replaces the first evaluation (True, "mean" or a mean tensor)."""
    return afs is not False and afs is not None


def afs_derivative(x: torch.Tensor, sigma: float, afs: Afs = True) -> torch.Tensor:
    """The analytical first step's estimate of dx/dsigma (no NFE): (x - m) / sqrt(1 + sigma^2).

    AMED (arXiv 2312.00094, sec. 3.3) takes eps(x, sigma) ~ x / sqrt(1 + sigma^2), the network's input in VP
    scaling, which is x0 * alpha + eps * s (alpha = 1 / sqrt(1 + sigma^2), s = sigma alpha) with the x0 part dropped
    and s ~ 1, i.e. D = 0. With D(x, sigma_max) taken as the data mean m the same reading gives eps ~ (x - m) alpha:
    the data-mean step is the zero-mean step of the centred problem, D_m(x) = m + D_0(x - m), which equals the exact
    d = (x - m) / sigma up to the factor s = 1 - O(1/sigma^2). ``afs`` True is m = 0; a tensor is m; "mean" must
    have been replaced by the mean (``diffsampler.sampling.prepared_options``).
    """
    return (x - afs_mean(x, afs)) / math.sqrt(1.0 + sigma**2)


def afs_mean(x: torch.Tensor, afs: Afs) -> torch.Tensor:
    """The m that AFS takes for D(x, sigma_max), shaped like x: 0 for ``afs`` True, the tensor itself for a mean;
    "mean" not yet replaced by the sampling layer is an error. It is also AFS's D at sigma = inf (the limit of
    x - sigma (x - m) / sqrt(1 + sigma^2) with x stored as x / sigma)."""
    if isinstance(afs, str):
        raise UserError(
            "afs=mean needs the data mean: run the solver through diffsampler's sampling layer, or pass the mean "
            "tensor itself as afs"
        )
    if isinstance(afs, torch.Tensor):
        return afs.to(x.device, x.dtype).expand_as(x).clone()  # its own memory: a callback may change D in place
    return torch.zeros_like(x)


def first_derivative(
    denoiser: DenoiserFn, x: torch.Tensor, sigma: float, step: int, afs: Afs, cond: Any
) -> torch.Tensor:
    """dx/dsigma at the start of a step, by AFS on the first step when asked."""
    if step == 0 and afs_on(afs):
        return afs_derivative(x, sigma, afs)
    return derivative(denoiser, x, sigma, cond)


def data_estimate(
    denoiser: DenoiserFn, x: torch.Tensor, sigma: float, step: int, afs: Afs, thresholding: bool, cond: Any
) -> torch.Tensor:
    """D(x, sigma), by AFS (D = x - sigma (x - m) / sqrt(1 + sigma^2), whose limit at sigma = inf is m) on the
    first step when asked, thresholded when asked."""
    if step == 0 and afs_on(afs) and math.isinf(sigma):
        denoised = afs_mean(x, afs)
    elif step == 0 and afs_on(afs):
        denoised = x - sigma * afs_derivative(x, sigma, afs)
    else:
        denoised = denoiser(x, sigma, cond)
    return dynamic_threshold(denoised) if thresholding else denoised


def step_from_infinity(
    denoiser: DenoiserFn,
    x: torch.Tensor,
    sigma_next: float,
    afs: Afs,
    cond: Any,
    callback: StepCallback | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_1, D_0) of the first step from sigma = inf (x stored as x / sigma): x_1 = sigma_1 x + D(x, inf), the limit
    of the Euler / DDIM step; there dx/dsigma = lim (x - D) / sigma is the stored x itself. ``callback`` hears of
    step 0 with the stored x and sigma = inf."""
    denoised = data_estimate(denoiser, x, math.inf, 0, afs, False, cond)
    report_step(callback, 0, math.inf, x, denoised)
    return sigma_next * x + denoised, denoised


def dynamic_threshold(denoised: torch.Tensor, quantile: float = THRESHOLD_QUANTILE) -> torch.Tensor:
    """Imagen's dynamic thresholding (arXiv 2205.11487 sec. 2.3): s = max(q_0.995(|D|), 1) per sample,
    D = clamp(D, -s, s) / s."""
    flat = denoised.reshape(denoised.shape[0], -1).abs().float()
    s = torch.quantile(flat, quantile, dim=1).clamp_min(1.0).to(denoised.dtype)
    s = s.reshape(-1, *([1] * (denoised.ndim - 1)))
    return denoised.clamp(-s, s) / s


def multistep_order(step: int, num_steps: int, max_order: int, lower_order_final: bool) -> int:
    """Order of multistep step ``step`` (0-based) of ``num_steps``: warm-up i + 1, N - i at the end when lowering."""
    order = min(max_order, step + 1)
    return min(order, num_steps - step) if lower_order_final else order


def finish(
    denoiser: DenoiserFn, x: torch.Tensor, sigmas: list[float], denoise_to_zero: bool, cond: Any
) -> torch.Tensor:
    """The optional final denoising x = D(x, sigma_min), one more NFE."""
    return denoiser(x, sigmas[-1], cond) if denoise_to_zero else x
