"""Multistep DPM-Solver++ (arXiv 2211.01095) in data prediction, in the EDM form.

With lambda = -log(sigma), h = lambda_{i+1} - lambda_i and phi_1 = expm1(-h), one step is
x_{i+1} = (s_{i+1} / s_i) x_i - phi_1 D_i + (higher-order terms in divided differences of D over lambda):
order 1 is DDIM; order 2 is the "midpoint" form of Algorithm 2 (- phi_1 D1 / 2) or the "taylor" form
(+ (phi_1 / h + 1) D1); order 3 adds the second divided difference D2 ~ h^2 D''/2 of the 3M step.

Integrating the quadratic through the last three D exactly gives the D2 weight -2 phi_3 (phi_3 = phi_2 / h - 1/2):
that form is the default and converges with order 3. The published 3M form (the DPM-Solver code, k-diffusion's
``sample_dpmpp_3m_sde`` and zju-pi/diff-sampler's diff-solvers-main/solver_utils.py) weighs D2 by -phi_3 and so
converges with order 2 only; it is kept as the solver ``dpmpp_published`` to reproduce published numbers.

From sigma_0 = inf (lambda = -inf; x stored as x / sigma) the first step is x_1 = s_1 x + D_0 (phi_1 = -1), and the
ratios r of later steps that reach back to lambda_0 are infinite, so D_0's divided differences have weight 0: the
float arithmetic below takes that limit as it is (no 0 * inf arises).
"""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence, Union

import torch

from diffsampler.solvers.base import (
    Afs,
    DenoiserFn,
    StepCallback,
    data_estimate,
    finish,
    multistep_order,
    report_step,
    rescale,
)

Scalar = Union[float, torch.Tensor]


def _log(v: Scalar) -> Scalar:
    return torch.log(v) if isinstance(v, torch.Tensor) else math.log(v)


def _expm1(v: Scalar) -> Scalar:
    return torch.expm1(v) if isinstance(v, torch.Tensor) else math.expm1(v)


def dpmpp_step(
    x: torch.Tensor,
    history: Sequence[torch.Tensor],
    lambdas: Sequence[Scalar],
    sigma: Scalar,
    sigma_next: Scalar,
    order: int,
    variant: str = "midpoint",
    published_3m: bool = False,
) -> torch.Tensor:
    """One DPM-Solver++ step from (x, sigma) to sigma_next with the last ``order`` data predictions.

    ``history`` and ``lambdas`` hold D and lambda = -log(sigma) at the previous grid points, newest last
    (at least ``order`` of them). Sigmas and lambdas may be floats or tensors broadcastable against x
    (per-sample sigmas, all positive); a float sigma_next = 0 returns D (the first-order step's limit).
    """
    d0 = history[-1]
    if not isinstance(sigma_next, torch.Tensor) and sigma_next == 0:
        return d0
    h = -_log(sigma_next) - lambdas[-1]
    phi_1 = _expm1(-h)
    if isinstance(sigma, torch.Tensor) or isinstance(sigma_next, torch.Tensor):
        linear = (sigma_next / sigma) * x  # per-sample sigmas (AMED-Plugin), all finite
    else:
        linear = rescale(x, sigma, sigma_next)
    x_next = linear - phi_1 * d0
    if order == 1:
        return x_next
    r0 = (lambdas[-1] - lambdas[-2]) / h
    d1_0 = (d0 - history[-2]) / r0
    if order == 2:
        if variant == "midpoint":
            return x_next - 0.5 * phi_1 * d1_0
        return x_next + (phi_1 / h + 1) * d1_0
    r1 = (lambdas[-2] - lambdas[-3]) / h
    d1_1 = (history[-2] - history[-3]) / r1
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    phi_2 = phi_1 / h + 1
    phi_3 = phi_2 / h - 0.5
    return x_next + phi_2 * d1 - (1 if published_3m else 2) * phi_3 * d2


def dpmpp(
    denoiser: DenoiserFn,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    cond: Any = None,
    callback: StepCallback | None = None,
    afs: Afs = False,
    denoise_to_zero: bool = False,
    order: Literal[1, 2, 3] = 3,
    variant: Literal["midpoint", "taylor"] = "midpoint",
    lower_order_final: bool = True,
    thresholding: bool = False,
    _published_3m: bool = False,
) -> torch.Tensor:
    """DPM-Solver++ of ``order`` (1 to 3): warm-up orders 1, 2, ..; with ``lower_order_final`` order N - i on step i.

    1 NFE per step; a last step to sigma = 0 returns D (the first-order step's limit, an Euler step).
    """
    steps = len(sigmas) - 1
    history: list[torch.Tensor] = []
    lambdas: list[float] = []
    for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        history = [*history, data_estimate(denoiser, x, s, i, afs, thresholding, cond)][-order:]
        report_step(callback, i, s, x, history[-1])
        lambdas = [*lambdas, -math.log(s)][-order:]
        x = dpmpp_step(
            x, history, lambdas, s, s_next, multistep_order(i, steps, order, lower_order_final), variant, _published_3m
        )
    return finish(denoiser, x, sigmas, denoise_to_zero, cond)


def dpmpp_published(denoiser: DenoiserFn, x: torch.Tensor, sigmas: list[float], **options: Any) -> torch.Tensor:
    """DPM-Solver++ with the published 3M step (D2 weighed by -phi_3: second order, as the peer implementations)."""
    return dpmpp(denoiser, x, sigmas, _published_3m=True, **options)


dpmpp_published.__wrapped__ = dpmpp  # type: ignore[attr-defined]
"""Its options are dpmpp's (``inspect.signature`` and ``signature_options`` follow ``__wrapped__``)."""
