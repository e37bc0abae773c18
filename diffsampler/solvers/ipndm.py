"""iPNDM (arXiv 2204.13902 sec. 4, in the form of zju-pi/diff-sampler, diff-solvers-main/solvers.py::ipndm_sampler)
and its variable-step version iPNDM_v.

Both are Adams-Bashforth methods on d = (x - D) / sigma = dx/dsigma. iPNDM uses the fixed coefficients of
uniform steps, x_{i+1} = x_i + h_i sum_j c_j d_{i-j} with c = (1), (3, -1)/2, (23, -16, 5)/12,
(55, -59, 37, -9)/24, and the lower orders during warm-up: order k on uniform steps, but only order 2 on a
non-uniform grid such as the polynomial one (the coefficients assume equal steps). iPNDM_v integrates the
polynomial through the past d's over the true steps, which keeps order k on any grid.

iPNDM_v_published is the official zju-pi/diff-sampler ``ipndm_v`` form (arXiv 2311.13349's code), kept to reproduce
published tables: its order 2 weights are the variable-step Adams-Bashforth ones, but its order 3 and 4 weights are
not (on equal steps its order 4 gives (57, -65, 43, -11)/24 = (2.375, -2.708, 1.792, -0.458) instead of
(55, -59, 37, -9)/24; its order 3 matches (23, -16, 5)/12 only on equal steps). On the closed-form Gaussian with the
polynomial grid its order 4 converges with order 1.0 (measured over 32-256 steps) and its order 3 with 2.0, where
iPNDM_v converges with order 4 and 3 (tests/test_fast_solver_order.py).
"""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence, Union

import torch

from diffsampler.solvers.adams_bashforth import adams_bashforth_weights, combine
from diffsampler.solvers.base import (
    Afs,
    DenoiserFn,
    StepCallback,
    finish,
    first_derivative,
    report_derivative,
    step_from_infinity,
)

Scalar = Union[float, torch.Tensor]

IPNDM_COEFFICIENTS: tuple[tuple[float, ...], ...] = (
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)
"""Adams-Bashforth weights for equal steps, orders 1 to 4 (entry k - 1 is order k), newest derivative first."""


def ipndm_step(x: torch.Tensor, history: Sequence[torch.Tensor], sigma: Scalar, sigma_next: Scalar) -> torch.Tensor:
    """x + (sigma_next - sigma) sum_j c_j d_{i-j} with the order len(history) (1 to 4) weights of IPNDM_COEFFICIENTS.

    ``history`` holds dx/dsigma at the last grid points, newest last. ``sigma`` and ``sigma_next`` may be
    floats or tensors broadcastable against x (per-sample sigmas).
    """
    return x + (sigma_next - sigma) * combine(IPNDM_COEFFICIENTS[len(history) - 1], history)


def ipndm(
    denoiser: DenoiserFn,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    cond: Any = None,
    callback: StepCallback | None = None,
    afs: Afs = False,
    denoise_to_zero: bool = False,
    order: Literal[1, 2, 3, 4] = 4,
) -> torch.Tensor:
    """iPNDM of ``order`` (1 to 4) with the fixed equal-step coefficients; warm-up order i + 1 on step i.

    From sigma = inf the first step is x_1 = s_1 x + D (Euler's limit) and d_0 = lim (x - D) / sigma, the stored x:
    the fixed weights do not depend on the step lengths, so the later steps have a finite limit too."""
    history: list[torch.Tensor] = []
    for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        if math.isinf(s):
            history, x = [x], step_from_infinity(denoiser, x, s_next, afs, cond, callback)[0]
            continue
        history = [*history, first_derivative(denoiser, x, s, i, afs, cond)][-order:]
        report_derivative(callback, i, s, x, history[-1])
        x = ipndm_step(x, history[-1:] if s_next == 0 else history, s, s_next)
    return finish(denoiser, x, sigmas, denoise_to_zero, cond)


def published_weights(nodes: Sequence[float], sigma_next: float) -> list[float]:
    """The official ipndm_v weights C_j (step length included, newest first) for past nodes sigma_0, sigma_1, ..

    With h = sigma_next - sigma_0 and g_k = sigma_{k-1} - sigma_k (all of one sign), a = (1 - h^2 / (3 g_1
    (g_1 + g_2))) / 2, q = g_1 (g_1 + g_2) / (g_2 (g_2 + g_3)) and b = [(1 - h / (3 (h + g_1))) / 2 + (1 - h / (2 (h
    + g_1))) h / (6 (h + g_1 + g_2))] h (h + g_1) (h + g_1 + g_2) / (g_1 (g_1 + g_2) (g_1 + g_2 + g_3)), the weights
    over h are (1), (1 + r/2, -r/2) with r = h / g_1, then order 3 adds a (1, -(1 + g_1/g_2), g_1/g_2) and order 4
    adds b (1, -(1 + g_1/g_2 + q), g_1/g_2 + q (1 + g_2/g_3), -q g_1/g_2) to the order 3 weights.
    """
    h = sigma_next - nodes[0]
    g = [nodes[k - 1] - nodes[k] for k in range(1, len(nodes))]
    if not g:
        return [h]
    r = h / g[0]
    weights = [1 + r / 2, -r / 2]
    if len(g) >= 2:
        a = (1 - h**2 / (3 * g[0] * (g[0] + g[1]))) / 2
        weights = [weights[0] + a, weights[1] - (1 + g[0] / g[1]) * a, a * g[0] / g[1]]
    if len(g) == 3:
        q = g[0] * (g[0] + g[1]) / (g[1] * (g[1] + g[2]))
        hg1, hg2 = h + g[0], h + g[0] + g[1]
        b = (
            ((1 - h / (3 * hg1)) / 2 + (1 - h / (2 * hg1)) * h / (6 * hg2))
            * h
            * hg1
            * hg2
            / (g[0] * (g[0] + g[1]) * (g[0] + g[1] + g[2]))
        )
        extra = [1, -(1 + g[0] / g[1] + q), g[0] / g[1] + q * (1 + g[1] / g[2]), -q * g[0] / g[1]]
        weights = [w + b * e for w, e in zip([*weights, 0.0], extra)]
    return [h * w for w in weights]


def ipndm_v(
    denoiser: DenoiserFn,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    cond: Any = None,
    callback: StepCallback | None = None,
    afs: Afs = False,
    denoise_to_zero: bool = False,
    order: Literal[1, 2, 3, 4] = 4,
    _published: bool = False,
) -> torch.Tensor:
    """Variable-step Adams-Bashforth of ``order`` (1 to 4) in sigma: C_j = int l_j(s) ds over the step.

    ``_published`` (set by ``ipndm_v_published``, not a user option) takes the official weights of
    ``published_weights`` instead; a step to sigma = 0 is Euler's.
    """
    history: list[torch.Tensor] = []
    for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        history = [*history, first_derivative(denoiser, x, s, i, afs, cond)][-order:]
        report_derivative(callback, i, s, x, history[-1])
        if s_next == 0:
            x = x - s * history[-1]
            continue
        nodes = sigmas[i + 1 - len(history) : i + 1][::-1]
        weights = published_weights(nodes, s_next) if _published else adams_bashforth_weights(nodes, s, s_next)
        x = x + combine(weights, history)
    return finish(denoiser, x, sigmas, denoise_to_zero, cond)


def ipndm_v_published(denoiser: DenoiserFn, x: torch.Tensor, sigmas: list[float], **options: Any) -> torch.Tensor:
    """iPNDM_v with the official code's weights (orders 3 and 4 are not Adams-Bashforth: order about 1 at order 4)."""
    return ipndm_v(denoiser, x, sigmas, _published=True, **options)


ipndm_v_published.__wrapped__ = ipndm_v  # type: ignore[attr-defined]
"""Its options are ipndm_v's (``inspect.signature`` and ``signature_options`` follow ``__wrapped__``)."""
