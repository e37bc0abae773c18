"""DEIS tAB (arXiv 2204.13902 sec. 4, "t-AB"): Adams-Bashforth in VP time on eps = d = (x - D) / sigma.

sigma is mapped to the time tau of the VP-linear SDE fitted to the grid's sigma range
(sigma(tau)^2 = exp(beta_d tau^2 / 2 + beta_min tau) - 1, as the ``time_uniform`` schedule), eps is
interpolated by the Lagrange polynomial in tau through the last k evaluations, and the exponential integrator
in the EDM form (dx/dsigma = eps) integrates it exactly: x_{i+1} = x_i + sum_j C_ij d_{i-j} with
C_ij = int_{s_i}^{s_{i+1}} l_j(tau(s)) ds. Order k (1 to 3 here; zju-pi/diff-sampler,
diff-solvers-main/solvers.py::deis_sampler allows 4), warm-up i + 1.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from diffsampler.schedules import vp_linear_fit
from diffsampler.solvers.adams_bashforth import adams_bashforth_weights, combine
from diffsampler.solvers.base import Afs, DenoiserFn, StepCallback, finish, first_derivative, report_derivative


def vp_time(sigma: np.ndarray, beta_d: float, beta_min: float) -> np.ndarray:
    """tau(sigma), the positive root of beta_d tau^2 / 2 + beta_min tau = log(1 + sigma^2)."""
    return (-beta_min + np.sqrt(beta_min**2 + 2 * beta_d * np.log1p(np.square(sigma)))) / beta_d


def deis_weights(sigmas: list[float], order: int) -> list[list[float]]:
    """C_ij for every step of the grid (the order used on step i is min(order, i + 1))."""
    positive = [s for s in sigmas if s > 0]
    beta_d, beta_min = vp_linear_fit(min(positive), max(positive))

    def warp(s: np.ndarray) -> np.ndarray:
        return vp_time(s, beta_d, beta_min)

    weights = []
    for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        if s_next == 0:
            weights.append([s_next - s])
            continue
        nodes = [float(warp(np.asarray(t, dtype=np.float64))) for t in sigmas[max(0, i + 1 - order) : i + 1][::-1]]
        weights.append(adams_bashforth_weights(nodes, s, s_next, warp))
    return weights


def deis(
    denoiser: DenoiserFn,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    cond: Any = None,
    callback: StepCallback | None = None,
    afs: Afs = False,
    denoise_to_zero: bool = False,
    order: Literal[1, 2, 3] = 3,
) -> torch.Tensor:
    """DEIS tAB of ``order`` (1 to 3), 1 NFE per step; a last step to sigma = 0 is an Euler step."""
    history: list[torch.Tensor] = []
    for i, (s, w) in enumerate(zip(sigmas[:-1], deis_weights(sigmas, order))):
        history = [*history, first_derivative(denoiser, x, s, i, afs, cond)][-order:]
        report_derivative(callback, i, s, x, history[-1])
        x = x + combine(w, history)
    return finish(denoiser, x, sigmas, denoise_to_zero, cond)
