"""UniPC (arXiv 2302.04867): the unified predictor UniP-p and corrector UniC-p, data prediction, EDM form.

With lambda = -log(sigma), h = lambda_t - lambda_s, hh = -h and B(h) = hh ("bh1") or expm1(hh) ("bh2"),
x_t = (s_t / s_s) x_s - expm1(hh) D_s - B(h) sum_k rho_k D1_k, where D1_k = (D_k - D_s) / r_k are the scaled
differences to earlier points (r_k = (lambda_k - lambda_s) / h) and rho solves R rho = b with R_ij = r_j^i and
b_i = i! phi_{i+1}(hh) / B(h) (the paper's eq. 9 and Algorithm 2). The corrector adds the point just
evaluated at x_t (r = 1); that evaluation is the next step's model output, so the corrector costs no NFE
and raises the order by one: UniPC with order p converges with order p + 1.

From sigma_0 = inf (x stored as x / sigma; bh2 only: bh1's B(h) = -h is infinite there) the first step is
x_1 = s_1 x + D_0, corrected to s_1 x + (D_0 + D_1) / 2. A later step reaching back to lambda_0 = -inf has r = -inf
there: that point's scaled difference vanishes and, as r -> -inf, its weight rho falls as r^-(p-1) while the other
weights tend to the solution of the first p - 1 rows of R rho = b, which is what is solved then.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch

from diffsampler.errors import UserError
from diffsampler.solvers.base import (
    Afs,
    DenoiserFn,
    StepCallback,
    data_estimate,
    dynamic_threshold,
    finish,
    multistep_order,
    report_step,
    rescale,
)


def _b_vector(hh: float, b_h: float, order: int) -> np.ndarray:
    """b_i = i! phi_{i+1}(hh) / B(h), i = 1 .. order (phi_1(hh) = expm1(hh) / hh, phi_{k+1} = (phi_k - 1/k!) / hh);
    the recursion stays finite at hh = -inf (sigma = inf), where expm1(hh) / hh = 0."""
    phi = math.expm1(hh) / hh - 1
    factorial = 1
    b = []
    for i in range(1, order + 1):
        b.append(phi * factorial / b_h)
        factorial *= i + 1
        phi = phi / hh - 1 / factorial
    return np.array(b, dtype=np.float64)


def unipc_coefficients(rks: list[float], h: float, variant: str) -> tuple[float, np.ndarray, np.ndarray]:
    """(B(h), rho of the predictor, rho of the corrector) for the ratios ``rks`` (the last one is 1).

    Infinite ratios (a point at sigma = inf) are taken in the limit: their rho is 0 and the finite points solve the
    first rows of the system (``_limit_coefficients``)."""
    hh = -h
    b_h = hh if variant == "bh1" else math.expm1(hh)
    if not all(math.isfinite(r) for r in rks):
        return _limit_coefficients(rks, hh, b_h)
    order = len(rks)
    r_matrix = np.array([[r ** (i - 1) for r in rks] for i in range(1, order + 1)], dtype=np.float64)
    b_vec = _b_vector(hh, b_h, order)
    if order == 1:
        return b_h, np.zeros(0), np.array([0.5])
    rho_p = np.array([0.5]) if order == 2 else np.linalg.solve(r_matrix[:-1, :-1], b_vec[:-1])
    return b_h, rho_p, np.linalg.solve(r_matrix, b_vec)


def _limit_coefficients(rks: list[float], hh: float, b_h: float) -> tuple[float, np.ndarray, np.ndarray]:
    """unipc_coefficients' limit where some ratios are infinite: rho = 0 for those, the first m rows for the m
    finite points (predictor: the points before the last; corrector: all)."""

    def solve(nodes: list[float]) -> np.ndarray:
        finite = [r for r in nodes if math.isfinite(r)]
        rho = np.zeros(len(nodes))
        if finite:
            matrix = np.array([[r**i for r in finite] for i in range(len(finite))], dtype=np.float64)
            rho[[k for k, r in enumerate(nodes) if math.isfinite(r)]] = np.linalg.solve(matrix, b[: len(finite)])
        return rho

    b = _b_vector(hh, b_h, len(rks))
    return b_h, solve(rks[:-1]), solve(rks)


def unipc_step(
    denoiser: DenoiserFn,
    x: torch.Tensor,
    history: list[torch.Tensor],
    lambdas: list[float],
    sigma: float,
    sigma_next: float,
    order: int,
    variant: str,
    correct: bool,
    thresholding: bool,
    cond: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """UniP-``order`` from sigma to sigma_next, then UniC with the fresh D(x_t) when ``correct``:
    (x_t, D(x_t) or None)."""
    d0 = history[-1]
    h = -math.log(sigma_next) - lambdas[-1]
    rks = [(lambdas[-1 - k] - lambdas[-1]) / h for k in range(1, order)] + [1.0]
    diffs = [(history[-1 - k] - d0) / rks[k - 1] for k in range(1, order)]
    b_h, rho_p, rho_c = unipc_coefficients(rks, h, variant)
    base = rescale(x, sigma, sigma_next) - math.expm1(-h) * d0
    x_next = base - b_h * sum(float(r) * d for r, d in zip(rho_p, diffs)) if diffs else base
    if not correct:
        return x_next, None
    fresh = denoiser(x_next, sigma_next, cond)
    fresh = dynamic_threshold(fresh) if thresholding else fresh
    correction = sum(float(r) * d for r, d in zip(rho_c[:-1], diffs)) + float(rho_c[-1]) * (fresh - d0)
    return base - b_h * correction, fresh


def unipc(
    denoiser: DenoiserFn,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    cond: Any = None,
    callback: StepCallback | None = None,
    afs: Afs = False,
    denoise_to_zero: bool = False,
    order: Literal[1, 2, 3] = 3,
    variant: Literal["bh1", "bh2"] = "bh2",
    lower_order_final: bool = True,
    thresholding: bool = False,
) -> torch.Tensor:
    """UniPC of ``order`` (1 to 3; converges with order + 1): warm-up orders 1, 2, ..; no corrector after the last step.

    NFE = steps: one evaluation at sigma_0 (none with AFS) and one per corrected step. A last step to
    sigma = 0 returns D (the Euler step's limit).
    """
    steps = len(sigmas) - 1
    if math.isinf(sigmas[0]) and variant == "bh1":
        raise UserError("unipc variant bh1 has no finite first step from sigma = inf (B(h) = -h); use variant bh2")
    history = [data_estimate(denoiser, x, sigmas[0], 0, afs, thresholding, cond)]
    lambdas = [-math.log(sigmas[0])]
    for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        report_step(callback, i, s, x, history[-1])
        if s_next == 0:
            x = history[-1]
            break
        step_order = multistep_order(i, steps, order, lower_order_final)
        x, fresh = unipc_step(
            denoiser, x, history, lambdas, s, s_next, step_order, variant, i < steps - 1, thresholding, cond
        )
        if fresh is not None:
            history = [*history, fresh][-order:]
            lambdas = [*lambdas, -math.log(s_next)][-order:]
    return finish(denoiser, x, sigmas, denoise_to_zero, cond)
