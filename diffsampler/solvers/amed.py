"""AMED-Solver and AMED-Plugin (arXiv 2312.00094): one learned intermediate time per step, 2 NFE a step.

Per interval t_n -> t_{n+1} a predictor gives (r_n, c_n, a_n) from (t_n, t_{n+1}) and the model's
bottleneck feature of the evaluation at t_n, and s_n = t_{n+1}^r t_n^(1-r) (geometric). AMED-Solver
(the approximate mean direction, paper eq. 12):
    x_s = x_n + (s_n - t_n) d_n,   d_s = (x_s - D(x_s, a_n s_n)) / s_n,   x_{n+1} = x_n + c_n (t_{n+1} - t_n) d_s.
AMED-Plugin runs a base solver on the grid t_0, s_0, t_1, s_1, ... with the second sub-step scaled
by c_n: Euler, DPM-Solver-2 (learned r, its own combination), iPNDM (one derivative buffer across
sub-steps) or DPM-Solver++ multistep (one data-prediction buffer, lower orders at the end of the
doubled grid); their steps are ``ipndm_step`` and ``dpmpp_step`` of the registered solvers, fed
per-sample sigmas. AFS replaces the first evaluation (odd budgets 3, 5, 7, 9); its feature is zeros.
A model without a bottleneck feature (``last_features`` None) feeds the pooled state instead
(``pooled_state_features``). A grid ending at 0 ends with an Euler step. The predictor network, its
checkpoints and their loading live in ``diffsampler.amed``; this module only takes a predictor callable.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal, NamedTuple

import torch
import torch.nn.functional as F

from diffsampler.errors import UserError, unknown_choice
from diffsampler.solvers.base import (
    Afs,
    DenoiserFn,
    StepCallback,
    afs_derivative,
    afs_on,
    finish,
    multistep_order,
    report_step,
)
from diffsampler.solvers.dpm_solver_pp import dpmpp_step
from diffsampler.solvers.ipndm import ipndm_step

PluginBase = Literal["euler", "dpm2", "ipndm", "dpmpp"]
PLUGIN_BASES: tuple[str, ...] = typing.get_args(PluginBase)
"""Base solvers AMED-Plugin wraps; the student ``amed`` is AMED-Solver itself."""
STUDENTS = ("amed", *PLUGIN_BASES)
DEFAULT_MAX_ORDER = {"ipndm": 4, "dpmpp": 3}
FALLBACK_FEATURE_DIM = 64
"""Width of the fallback feature (an 8 x 8 pooled map) for models without a bottleneck feature."""


class AmedParams(NamedTuple):
    """Per-sample step parameters, each of shape (B,): r in (0, 1), direction scale c, time scale a."""

    r: torch.Tensor
    c: torch.Tensor
    a: torch.Tensor


Predictor = Callable[[float, float, "torch.Tensor | None", int], AmedParams]
"""(t_n, t_{n+1}, feature (B, F) or None, batch) -> AmedParams; an AMEDPredictor or any stand-in."""


def pooled_state_features(x: torch.Tensor, sigma: float, width: int = FALLBACK_FEATURE_DIM) -> torch.Tensor:
    """The fallback feature of a model without a bottleneck: x / sqrt(1 + sigma^2) pooled to ``width`` values.

    Images (B, C, H, W) are averaged over channels and pooled to a sqrt(width)^2 map (8 x 8 by
    default, like the U-Net feature hooked in zju-pi/diff-sampler, amed-solver-main/solvers_amed.py); other
    samples are flattened, then zero-padded or average-pooled to ``width``.
    """
    y = (x / math.sqrt(1.0 + sigma**2)).float()
    side = math.isqrt(width)
    if y.ndim == 4 and side * side == width:
        return F.adaptive_avg_pool2d(y.mean(dim=1, keepdim=True), side).flatten(1)
    flat = y.flatten(1)
    if flat.shape[1] <= width:
        return F.pad(flat, (0, width - flat.shape[1]))
    return F.adaptive_avg_pool1d(flat[:, None], width)[:, 0]


def per_sample(value: float | torch.Tensor, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A scalar or a (B,) tensor shaped (B, 1, ..., 1) to broadcast against x (B, ...), in ``dtype`` (x's by
    default)."""
    v = torch.as_tensor(value, device=x.device)
    if v.ndim == 1:
        v = v.reshape(-1, *([1] * (x.ndim - 1)))
    return v.to(dtype or x.dtype)


def scaled(x_start: torch.Tensor, x_base: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """x_start + c (x_base - x_start): a base solver's step x_start -> x_base with its increment scaled by c."""
    return x_base + (c - 1) * (x_base - x_start)


def intermediate_sigma(t: float, t_next: float, r: torch.Tensor) -> torch.Tensor:
    """s = t_next^r t^(1 - r): linear interpolation in log sigma, float64 of shape (B,)."""
    r64 = r.to(torch.float64)
    return torch.exp((1 - r64) * math.log(t) + r64 * math.log(t_next))


def first_evaluation(
    denoiser: DenoiserFn, x: torch.Tensor, t: float, afs: Afs, cond: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(D, d, feature) at the start of an interval: the model's bottleneck feature (detached), the
    pooled-state fallback, or None (zeros) when AFS replaces the evaluation by d = x / sqrt(1 + t^2)."""
    if afs_on(afs):
        d = afs_derivative(x, t, afs)
        return x - t * d, d, None
    denoised = denoiser(x, t, cond)
    features = getattr(denoiser, "last_features", None)
    features = pooled_state_features(x, t) if features is None else features.detach()
    return denoised, (x - denoised) / t, features


@dataclass(frozen=True)
class Student:
    """The solver a predictor steers: ``amed`` (AMED-Solver) or an AMED-Plugin base, with its step settings."""

    name: str
    afs: Afs = False
    max_order: int | None = None
    lower_order_final: bool = True

    @property
    def order(self) -> int:
        """The multistep buffer length (the base's default when ``max_order`` is None; 1 for one-step students)."""
        return self.max_order or DEFAULT_MAX_ORDER.get(self.name, 1)


@dataclass
class _Interval:
    """One interval t -> t_next of grid index ``index`` of ``steps``, with the evaluation at t and the learned point."""

    t: float
    t_next: float
    index: int
    steps: int
    d: torch.Tensor
    denoised: torch.Tensor
    params: AmedParams
    s_col: torch.Tensor


def _to_intermediate(student: Student, x: torch.Tensor, step: _Interval, history: list[Any]) -> torch.Tensor:
    """The base solver's first sub-step t -> s (an Euler step for ``amed``, ``euler`` and ``dpm2``)."""
    if student.name == "ipndm":
        history[:] = [*history, step.d][-student.order :]
        return ipndm_step(x, history, step.t, step.s_col).to(x.dtype)
    if student.name == "dpmpp":
        history[:] = [*history, (-math.log(step.t), step.denoised)][-student.order :]
        order = multistep_order(2 * step.index, 2 * step.steps, student.order, student.lower_order_final)
        return _dpmpp_sub_step(x, history, step.t, step.s_col, order)
    return x + (step.s_col - step.t).to(x.dtype) * step.d


def _to_next(
    student: Student,
    x: torch.Tensor,
    x_mid: torch.Tensor,
    denoised_mid: torch.Tensor,
    step: _Interval,
    history: list[Any],
) -> torch.Tensor:
    """The second sub-step s -> t_next from the evaluation at s, its increment scaled by c (eq. 12 for ``amed``)."""
    c, t, t_next, s_col = per_sample(step.params.c, x), step.t, step.t_next, step.s_col
    d_mid = (x_mid - denoised_mid) / s_col.to(x.dtype)
    if student.name == "amed":
        return x + c * (t_next - t) * d_mid
    if student.name == "euler":
        return x_mid + c * (t_next - s_col).to(x.dtype) * d_mid
    if student.name == "dpm2":
        half_over_r = per_sample(0.5 / step.params.r.to(torch.float64), x)
        return x + c * (t_next - t) * (half_over_r * d_mid + (1 - half_over_r) * step.d)
    if student.name == "ipndm":
        history[:] = [*history, d_mid][-student.order :]
        return scaled(x_mid, ipndm_step(x_mid, history, s_col, t_next).to(x.dtype), c)
    if student.name == "dpmpp":
        history[:] = [*history, (-torch.log(s_col), denoised_mid)][-student.order :]
        order = multistep_order(2 * step.index + 1, 2 * step.steps, student.order, student.lower_order_final)
        return scaled(x_mid * (t_next / s_col).to(x.dtype), _dpmpp_sub_step(x_mid, history, s_col, t_next, order), c)
    raise unknown_choice("AMED student solver", student.name, STUDENTS)


def amed_interval(
    denoiser: DenoiserFn,
    predictor: Predictor,
    x: torch.Tensor,
    sigmas: list[float],
    index: int,
    history: list[Any],
    student: Student,
    cond: Any = None,
    callback: StepCallback | None = None,
) -> tuple[torch.Tensor, AmedParams | None]:
    """Interval ``index`` (sigmas[index] -> sigmas[index + 1]) of AMED-Solver or AMED-Plugin, 2 NFE (1 with AFS
    on interval 0, 1 when it ends at 0). ``history`` holds the multistep buffer and is updated in place.
    Differentiable in the predictor's parameters (the trainer back-propagates through D(x_s, a s))."""
    t, t_next = sigmas[index], sigmas[index + 1]
    denoised, d, features = first_evaluation(denoiser, x, t, student.afs if index == 0 else False, cond)
    report_step(callback, index, t, x, denoised)
    if t_next == 0:
        return x - t * d, None
    params = predictor(t, t_next, features, x.shape[0])
    s = intermediate_sigma(t, t_next, params.r)
    step = _Interval(t, t_next, index, len(sigmas) - 1, d, denoised, params, per_sample(s, x, torch.float64))
    x_mid = _to_intermediate(student, x, step, history)
    denoised_mid = denoiser(x_mid, params.a.to(torch.float64) * s, cond)
    return _to_next(student, x, x_mid, denoised_mid, step, history), params


def _dpmpp_sub_step(x: torch.Tensor, history: list[Any], sigma: Any, sigma_next: Any, order: int) -> torch.Tensor:
    """DPM-Solver++ (midpoint form) over one sub-step from ``history`` of (lambda, D) pairs, in x's dtype."""
    lambdas, denoised = [lam for lam, _ in history], [dd for _, dd in history]
    return dpmpp_step(x, denoised, lambdas, sigma, sigma_next, min(order, len(history))).to(x.dtype)


def detach_history(history: list[Any]) -> list[Any]:
    """The multistep buffer with every tensor detached (the trainer's cut between intervals)."""
    return [
        tuple(v.detach() if torch.is_tensor(v) else v for v in item) if isinstance(item, tuple) else item.detach()
        for item in history
    ]


def _as_predictor(predictor: Any) -> Predictor:
    """The predictor callable; a path must be loaded first (``diffsampler.amed.checkpoint.prepare_amed``)."""
    if predictor is None:
        raise UserError("AMED solvers need a trained predictor: pass -o predictor=PATH (see `diffsampler train-amed`)")
    if not callable(predictor):
        raise UserError(
            f"AMED solvers take a loaded predictor, not {type(predictor).__name__}; run them through the prepare hook"
        )
    return predictor


def run_amed(
    denoiser: DenoiserFn,
    x: torch.Tensor,
    sigmas: list[float],
    predictor: Any,
    student: Student,
    cond: Any = None,
    denoise_to_zero: bool = False,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """All intervals of the grid with one predictor; the predictor follows x's device."""
    net = _as_predictor(predictor)
    if isinstance(net, torch.nn.Module):
        net.to(x.device)
    history: list[Any] = []
    for i in range(len(sigmas) - 1):
        x, _ = amed_interval(denoiser, net, x, sigmas, i, history, student, cond, callback)
    return finish(denoiser, x, sigmas, denoise_to_zero, cond)


def amed_solver(
    denoiser: DenoiserFn,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    cond: Any = None,
    callback: StepCallback | None = None,
    afs: Afs = False,
    denoise_to_zero: bool = False,
    predictor: Any = None,
) -> torch.Tensor:
    """AMED-Solver: x_{n+1} = x_n + c_n (t_{n+1} - t_n) d(x_n + (s_n - t_n) d_n, a_n s_n), 2 NFE per step."""
    return run_amed(denoiser, x, sigmas, predictor, Student("amed", afs), cond, denoise_to_zero, callback)


def amed_plugin(
    denoiser: DenoiserFn,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    cond: Any = None,
    callback: StepCallback | None = None,
    afs: Afs = False,
    denoise_to_zero: bool = False,
    predictor: Any = None,
    base: PluginBase | None = None,
    max_order: int | None = None,
    lower_order_final: bool | None = None,
) -> torch.Tensor:
    """AMED-Plugin: the base solver on t_0, s_0, t_1, s_1, ... with learned s_n and scales, 2 NFE per step."""
    if base not in PLUGIN_BASES:
        raise unknown_choice("amed-plugin base solver (-o base=...)", str(base), PLUGIN_BASES)
    lof = True if lower_order_final is None else bool(lower_order_final)
    student = Student(base, afs, max_order, lof)
    return run_amed(denoiser, x, sigmas, predictor, student, cond, denoise_to_zero, callback)
