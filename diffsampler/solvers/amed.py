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
from typing import Any, Callable, Literal, NamedTuple

import torch
import torch.nn.functional as F

from diffsampler.errors import UserError, unknown_choice
from diffsampler.solvers.base import Denoiser, afs_derivative, finish, multistep_order
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
    default, like the U-Net feature of the anchor); other samples are flattened, then zero-padded or
    average-pooled to ``width``.
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
    """A scalar or a (B,) tensor shaped (B, 1, ..., 1) to broadcast against x (B, ...), in ``dtype`` (x's by default)."""
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
    denoiser: Denoiser, x: torch.Tensor, t: float, use_afs: bool, cond: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(D, d, feature) at the start of an interval: the model's bottleneck feature (detached), the
    pooled-state fallback, or None (zeros) when AFS replaces the evaluation by d = x / sqrt(1 + t^2)."""
    if use_afs:
        d = afs_derivative(x, t)
        return x - t * d, d, None
    denoised = denoiser(x, t, cond)
    features = getattr(denoiser, "last_features", None)
    features = pooled_state_features(x, t) if features is None else features.detach()
    return denoised, (x - denoised) / t, features


def amed_interval(
    denoiser: Denoiser,
    predictor: Predictor,
    x: torch.Tensor,
    t: float,
    t_next: float,
    index: int,
    history: list[Any],
    *,
    student: str,
    num_steps: int,
    afs: bool = False,
    cond: Any = None,
    max_order: int | None = None,
    lower_order_final: bool = True,
) -> tuple[torch.Tensor, AmedParams | None]:
    """One interval of AMED-Solver (student ``amed``) or AMED-Plugin (a base name), 2 NFE (1 with AFS
    on interval 0, 1 when t_next = 0). ``history`` holds the multistep buffer and is updated in place.
    Differentiable in the predictor's parameters (the trainer back-propagates through D(x_s, a s))."""
    denoised, d, features = first_evaluation(denoiser, x, t, afs and index == 0, cond)
    if t_next == 0:
        return x - t * d, None
    params = predictor(t, t_next, features, x.shape[0])
    s = intermediate_sigma(t, t_next, params.r)
    s_col = per_sample(s, x, torch.float64)
    c = per_sample(params.c, x)
    order = max_order or DEFAULT_MAX_ORDER.get(student, 1)
    if student == "ipndm":
        history[:] = [*history, d][-order:]
        x_mid = ipndm_step(x, history, t, s_col).to(x.dtype)
    elif student == "dpmpp":
        history[:] = [*history, (-math.log(t), denoised)][-order:]
        x_mid = _dpmpp_sub_step(x, history, t, s_col, multistep_order(2 * index, 2 * num_steps, order, lower_order_final))
    else:
        x_mid = x + (s_col - t).to(x.dtype) * d
    denoised_mid = denoiser(x_mid, params.a.to(torch.float64) * s, cond)
    d_mid = (x_mid - denoised_mid) / s_col.to(x.dtype)
    if student == "amed":
        x_next = x + c * (t_next - t) * d_mid
    elif student == "euler":
        x_next = x_mid + c * (t_next - s_col).to(x.dtype) * d_mid
    elif student == "dpm2":
        half_over_r = per_sample(0.5 / params.r.to(torch.float64), x)
        x_next = x + c * (t_next - t) * (half_over_r * d_mid + (1 - half_over_r) * d)
    elif student == "ipndm":
        history[:] = [*history, d_mid][-order:]
        x_next = scaled(x_mid, ipndm_step(x_mid, history, s_col, t_next).to(x.dtype), c)
    elif student == "dpmpp":
        history[:] = [*history, (-torch.log(s_col), denoised_mid)][-order:]
        step_order = multistep_order(2 * index + 1, 2 * num_steps, order, lower_order_final)
        x_next = scaled(x_mid * (t_next / s_col).to(x.dtype), _dpmpp_sub_step(x_mid, history, s_col, t_next, step_order), c)
    else:
        raise unknown_choice("AMED student solver", student, STUDENTS)
    return x_next, params


def _dpmpp_sub_step(x: torch.Tensor, history: list[Any], sigma: Any, sigma_next: Any, order: int) -> torch.Tensor:
    """DPM-Solver++ (midpoint form) over one sub-step from ``history`` of (lambda, D) pairs, in x's dtype."""
    lambdas, denoised = [lam for lam, _ in history], [dd for _, dd in history]
    return dpmpp_step(x, denoised, lambdas, sigma, sigma_next, min(order, len(history))).to(x.dtype)


def detach_history(history: list[Any]) -> list[Any]:
    """The multistep buffer with every tensor detached (the trainer's cut between intervals)."""
    return [tuple(v.detach() if torch.is_tensor(v) else v for v in item) if isinstance(item, tuple) else item.detach() for item in history]


def _as_predictor(predictor: Any) -> Predictor:
    """The predictor callable; a path must be loaded first (``diffsampler.amed.checkpoint.prepare_amed``)."""
    if predictor is None:
        raise UserError("AMED solvers need a trained predictor: pass -o predictor=PATH (see `diffsampler train-amed`)")
    if not callable(predictor):
        raise UserError(f"AMED solvers take a loaded predictor, not {type(predictor).__name__}; run them through the prepare hook")
    return predictor


def run_amed(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: list[float],
    predictor: Any,
    student: str,
    cond: Any,
    afs: bool,
    denoise_to_zero: bool,
    max_order: int | None,
    lower_order_final: bool,
) -> torch.Tensor:
    """All intervals of the grid with one predictor; the predictor follows x's device."""
    net = _as_predictor(predictor)
    if isinstance(net, torch.nn.Module):
        net.to(x.device)
    history: list[Any] = []
    steps = len(sigmas) - 1
    for i, (t, t_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        x, _ = amed_interval(
            denoiser, net, x, t, t_next, i, history, student=student, num_steps=steps, afs=afs, cond=cond,
            max_order=max_order, lower_order_final=lower_order_final,
        )
    return finish(denoiser, x, sigmas, denoise_to_zero, cond)


def amed_solver(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    cond: Any = None,
    afs: bool = False,
    denoise_to_zero: bool = False,
    predictor: Any = None,
) -> torch.Tensor:
    """AMED-Solver: x_{n+1} = x_n + c_n (t_{n+1} - t_n) d(x_n + (s_n - t_n) d_n, a_n s_n), 2 NFE per step."""
    return run_amed(denoiser, x, sigmas, predictor, "amed", cond, afs, denoise_to_zero, None, True)


def amed_plugin(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    cond: Any = None,
    afs: bool = False,
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
    return run_amed(denoiser, x, sigmas, predictor, base, cond, afs, denoise_to_zero, max_order, lof)
