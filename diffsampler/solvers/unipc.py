"""UniPC (arXiv 2302.04867): the unified predictor UniP-p and corrector UniC-p, data prediction, EDM form.

With lambda = -log(sigma), h = lambda_t - lambda_s, hh = -h and B(h) = hh ("bh1") or expm1(hh) ("bh2"),
x_t = (s_t / s_s) x_s - expm1(hh) D_s - B(h) sum_k rho_k D1_k, where D1_k = (D_k - D_s) / r_k are the scaled
differences to earlier points (r_k = (lambda_k - lambda_s) / h) and rho solves R rho = b with R_ij = r_j^i and
b_i = i! phi_{i+1}(hh) / B(h) (the paper's eq. 9 and Algorithm 2). The corrector adds the point just
evaluated at x_t (r = 1); that evaluation is the next step's model output, so the corrector costs no NFE
and raises the order by one: UniPC with order p converges with order p + 1.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch

from diffsampler.solvers.base import (
    Afs,
    DenoiserFn,
    StepCallback,
    data_estimate,
    dynamic_threshold,
    finish,
    multistep_order,
    report_step,
)


def unipc_coefficients(rks: list[float], h: float, variant: str) -> tuple[float, np.ndarray, np.ndarray]:
    """(B(h), rho of the predictor, rho of the corrector) for the ratios ``rks`` (the last one is 1)."""
    hh = -h
    b_h = hh if variant == "bh1" else math.expm1(hh)
    order = len(rks)
    phi = math.expm1(hh) / hh - 1
    factorial = 1
    b = []
    for i in range(1, order + 1):
        b.append(phi * factorial / b_h)
        factorial *= i + 1
        phi = phi / hh - 1 / factorial
    r_matrix = np.array([[r ** (i - 1) for r in rks] for i in range(1, order + 1)], dtype=np.float64)
    b_vec = np.array(b, dtype=np.float64)
    if order == 1:
        return b_h, np.zeros(0), np.array([0.5])
    rho_p = np.array([0.5]) if order == 2 else np.linalg.solve(r_matrix[:-1, :-1], b_vec[:-1])
    return b_h, rho_p, np.linalg.solve(r_matrix, b_vec)


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
    base = (sigma_next / sigma) * x - math.expm1(-h) * d0
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
