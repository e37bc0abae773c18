"""Step formulas of the base solvers that AMED-Plugin wraps (iPNDM, DPM-Solver++ multistep).

Kept apart from the registered iPNDM / DPM-Solver++ samplers so that AMED-Plugin can apply them
to sub-steps of per-sample length (the learned intermediate time differs between samples).
All sigmas are per-sample float64 tensors of shape (B,) or Python floats.
"""

from __future__ import annotations

from typing import Sequence

import torch

IPNDM_COEFFICIENTS: tuple[tuple[float, ...], ...] = (
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)
"""Fixed-step Adams-Bashforth weights of iPNDM (arXiv 2204.13902), newest derivative first."""


def per_sample(value: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A scalar or a (B,) tensor shaped to broadcast against x (B, ...), in x's dtype."""
    v = torch.as_tensor(value, device=x.device)
    if v.ndim == 0:
        return v.to(x.dtype)
    return v.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def ipndm_direction(history: Sequence[torch.Tensor], max_order: int) -> torch.Tensor:
    """sum_j b_j d_{i-j} with the iPNDM weights of order min(max_order, len(history)); history is oldest first."""
    order = min(max_order, len(history), len(IPNDM_COEFFICIENTS))
    weights = IPNDM_COEFFICIENTS[order - 1]
    newest_first = list(reversed(history[-order:]))
    out = weights[0] * newest_first[0]
    for w, d in zip(weights[1:], newest_first[1:]):
        out = out + w * d
    return out


def dpmpp_order(index: int, total: int, max_order: int, lower_order_final: bool) -> int:
    """Order of DPM-Solver++ step ``index`` of ``total``: warm-up i + 1, then max_order, lower near the end."""
    if index + 1 < max_order or not lower_order_final:
        return min(max_order, index + 1)
    return max(1, min(max_order, total - index))


def dpmpp_update(
    x: torch.Tensor,
    sigma: float | torch.Tensor,
    sigma_next: float | torch.Tensor,
    history: Sequence[tuple[float | torch.Tensor, torch.Tensor]],
    order: int,
    scale: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """DPM-Solver++ multistep data-prediction update (arXiv 2211.01095, eqs. of 2M / 3M) in the EDM form.

    With lambda = -log sigma, h = lambda_next - lambda, phi1 = expm1(-h):
    x' = (sigma_next / sigma) x - scale (phi1 D_0 + phi1 D1 / 2)           (order 2; order 1 drops D1)
    x' = (sigma_next / sigma) x + scale (-phi1 D_0 + phi2 D1 - phi3 D2)    (order 3),
    D1, D2 divided differences of the data predictions D in ``history`` ((sigma, D) pairs, oldest first).
    """
    order = min(order, len(history), 3)

    def log_sigma(v: float | torch.Tensor) -> torch.Tensor:
        return torch.log(torch.as_tensor(v, dtype=torch.float64, device=x.device))

    lam = [-log_sigma(s) for s, _ in history[-order:]][::-1]
    ds = [d for _, d in history[-order:]][::-1]
    h = log_sigma(sigma) - log_sigma(sigma_next)
    phi1 = torch.expm1(-h)
    ratio = torch.exp(-h)
    model = -per_sample(phi1, x) * ds[0]
    if order >= 2:
        r0 = (lam[0] - lam[1]) / h
        d1_0 = (ds[0] - ds[1]) / per_sample(r0, x)
        if order == 2:
            model = model - 0.5 * per_sample(phi1, x) * d1_0
        else:
            r1 = (lam[1] - lam[2]) / h
            d1_1 = (ds[1] - ds[2]) / per_sample(r1, x)
            d1 = d1_0 + per_sample(r0 / (r0 + r1), x) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / per_sample(r0 + r1, x)
            phi2 = phi1 / h + 1.0
            phi3 = phi2 / h - 0.5
            model = model + per_sample(phi2, x) * d1 - per_sample(phi3, x) * d2
    return per_sample(ratio, x) * x + per_sample(scale, x) * model

