"""Adams-Bashforth weights on arbitrary grids: integrals of Lagrange basis polynomials.

For past derivatives d_j at nodes u_j (newest first) the step is x_{i+1} = x_i + sum_j C_j d_j with
C_j = int_{s_i}^{s_{i+1}} l_j(u(sigma)) dsigma, l_j the Lagrange basis on the nodes u_j (DEIS, arXiv
2204.13902 eq. 14, with u the VP time; u = sigma gives the classical variable-step Adams-Bashforth method).
The integral is taken over log(sigma) by Gauss-Legendre quadrature, where the integrand is smooth and
analytic well away from the interval for any sigma grid used here.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence, cast

import numpy as np
import torch

QUADRATURE_NODES = 32
"""Gauss-Legendre nodes per step; the integrands are analytic, so the rule is exact to about 1e-15."""

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(QUADRATURE_NODES)


def lagrange_basis(nodes: list[float], u: np.ndarray) -> np.ndarray:
    """l_j(u) for every node j (rows) at the points u (columns)."""
    rows = []
    for j, u_j in enumerate(nodes):
        row = np.ones_like(u)
        for k, u_k in enumerate(nodes):
            if k != j:
                row = row * (u - u_k) / (u_j - u_k)
        rows.append(row)
    return np.stack(rows)


def adams_bashforth_weights(
    nodes: list[float], sigma: float, sigma_next: float, warp: Callable[[np.ndarray], np.ndarray] | None = None
) -> list[float]:
    """C_j = int_sigma^sigma_next l_j(warp(s)) ds for the interpolation nodes (already warped), newest first."""
    lo, hi = math.log(sigma_next), math.log(sigma)
    log_s = 0.5 * (hi - lo) * _NODES + 0.5 * (hi + lo)
    s = np.exp(log_s)
    u = s if warp is None else warp(s)
    basis = lagrange_basis(nodes, u)
    # d sigma = sigma d log(sigma); the integral runs from sigma down to sigma_next
    return [float(-0.5 * (hi - lo) * np.sum(_WEIGHTS * s * row)) for row in basis]


def combine(weights: Sequence[float], history: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum_j w_j d_{i-j}: ``weights`` newest first, ``history`` newest last."""
    return cast(torch.Tensor, sum(w * d for w, d in zip(weights, reversed(history))))
