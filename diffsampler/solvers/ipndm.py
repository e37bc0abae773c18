"""iPNDM (arXiv 2204.13902 sec. 4, in the form of zju-pi/diff-sampler, diff-solvers-main/solvers.py::ipndm_sampler)
and its variable-step version iPNDM_v.

Both are Adams-Bashforth methods on d = (x - D) / sigma = dx/dsigma. iPNDM uses the fixed coefficients of
uniform steps, x_{i+1} = x_i + h_i sum_j c_j d_{i-j} with c = (1), (3, -1)/2, (23, -16, 5)/12,
(55, -59, 37, -9)/24, and the lower orders during warm-up: order k on uniform steps, but only order 2 on a
non-uniform grid such as the polynomial one (the coefficients assume equal steps). iPNDM_v integrates the
polynomial through the past d's over the true steps, which keeps order k on any grid.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence, Union

import torch

from diffsampler.solvers.adams_bashforth import adams_bashforth_weights, combine
from diffsampler.solvers.base import DenoiserFn, finish, first_derivative

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
    afs: bool = False,
    denoise_to_zero: bool = False,
    order: Literal[1, 2, 3, 4] = 4,
) -> torch.Tensor:
    """iPNDM of ``order`` (1 to 4) with the fixed equal-step coefficients; warm-up order i + 1 on step i."""
    history: list[torch.Tensor] = []
    for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        history = [*history, first_derivative(denoiser, x, s, i, afs, cond)][-order:]
        x = ipndm_step(x, history[-1:] if s_next == 0 else history, s, s_next)
    return finish(denoiser, x, sigmas, denoise_to_zero, cond)


def ipndm_v(
    denoiser: DenoiserFn,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    cond: Any = None,
    afs: bool = False,
    denoise_to_zero: bool = False,
    order: Literal[1, 2, 3, 4] = 4,
) -> torch.Tensor:
    """Variable-step Adams-Bashforth of ``order`` (1 to 4) in sigma: C_j = int l_j(s) ds over the step."""
    history: list[torch.Tensor] = []
    for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        history = [*history, first_derivative(denoiser, x, s, i, afs, cond)][-order:]
        if s_next == 0:
            x = x - s * history[-1]
            continue
        nodes = sigmas[i + 1 - len(history) : i + 1][::-1]
        x = x + combine(adams_bashforth_weights(nodes, s, s_next), history)
    return finish(denoiser, x, sigmas, denoise_to_zero, cond)
