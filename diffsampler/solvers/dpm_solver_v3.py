"""DPM-Solver-v3 (arXiv 2310.13268): multistep predictor-corrector driven by empirical model statistics.

EDM form (alpha = 1, lambda = -log sigma). Per-element statistics l, s, b on a grid uniform in lambda
give f = sigma eps - l x = (1 - l) x - D (eq. 6) and, relative to an expansion index s,
g_i = e^{S_s - S_i} f_i - e^{S_s} (B_i - B_s) (eq. 8). The exact solution (eq. 9) is then

    x_t = e^{L_s - L_t} x_s - e^{-L_t - S_s} (I_t - I_s) g_s - e^{-L_t} (C_t - C_s - B_s (I_t - I_s))
          - e^{L_s - L_t} sum_k E_k(s, t) g^(k)

with cumulative trapezoid integrals on the grid L = cum(l), S = cum(s), I = cum(e^{L+S}),
B = cum(e^{-S} b), C = cum(e^{L+S} B) and E_k(s, t) = int_s^t e^{(L+S) - (L+S)_s} (lambda - lambda_s)^k / k!
(App. C.1.2). g^(k) are estimates of the k-th lambda-derivative of g from earlier evaluations (eq. 13 or the
pseudo-order divided differences of eq. 15-16). With l = 1, s = 0, b = 0 this is DDIM at order 1 and
DPM-Solver++(2M, Taylor form) at order 2.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch

from diffsampler.errors import UserError
from diffsampler.schedules import vp_linear_fit
from diffsampler.solvers.base import Afs, DenoiserFn, StepCallback, afs_derivative, afs_on, finish, report_step

log = logging.getLogger(__name__)

HALF_CORRECTOR_VP_TIME = 0.5
"""The half-corrector corrects only points at VP time t <= 0.5 (paper section 3.4 / README of the authors)."""


def cumulative_trapezoid(y: torch.Tensor, lambdas: torch.Tensor) -> torch.Tensor:
    """out_n = sum_{i=1..n} (lambda_i - lambda_{i-1}) (y_i + y_{i-1}) / 2 along the first axis; out_0 = 0."""
    step = (lambdas[1:] - lambdas[:-1]).reshape(-1, *([1] * (y.ndim - 1)))
    out = torch.zeros_like(y)
    out[1:] = torch.cumsum(0.5 * step * (y[1:] + y[:-1]), dim=0)
    return out


class Tables:
    """The integrals of the update on one device, in float64, with the order-k weights cached per (s, t, k)."""

    def __init__(self, stats: EmpiricalStatistics, device: torch.device) -> None:
        self.lambdas = stats.lambdas().to(device)
        l, s, b = (t.to(device, torch.float64) for t in (stats.l, stats.s, stats.b))
        self.L = cumulative_trapezoid(l, self.lambdas)
        self.S = cumulative_trapezoid(s, self.lambdas)
        self.LS = self.L + self.S
        self.I = cumulative_trapezoid(torch.exp(self.LS), self.lambdas)
        self.B = cumulative_trapezoid(torch.exp(-self.S) * b, self.lambdas)
        self.C = cumulative_trapezoid(torch.exp(self.LS) * self.B, self.lambdas)
        if not all(torch.isfinite(t).all() for t in (self.I, self.B, self.C)):
            worst = int(s.abs().flatten(1).amax(dim=1).argmax())
            raise UserError(
                f"the statistics' integrals overflow (|s| up to {float(s[worst].abs().max()):.3g} "
                f"at sigma {math.exp(-float(self.lambdas[worst])):.3g}); "
                "recompute them with more data points (num_data)"
            )
        self.l = l
        self._weights: dict[tuple[int, int, int], torch.Tensor] = {}

    def weight(self, i_s: int, i_t: int, k: int) -> torch.Tensor:
        """E_k(s, t) = trapezoid of e^{(L+S)_j - (L+S)_s} (lambda_j - lambda_s)^k / k! over j = s..t."""
        key = (i_s, i_t, k)
        if key not in self._weights:
            lam = self.lambdas[i_s : i_t + 1]
            rel = (lam - lam[0]).reshape(-1, *([1] * (self.LS.ndim - 1)))
            y = torch.exp(self.LS[i_s : i_t + 1] - self.LS[i_s]) * rel**k / math.factorial(k)
            self._weights[key] = cumulative_trapezoid(y, lam)[-1]
        return self._weights[key]


@dataclass(eq=False)
class EmpiricalStatistics:
    """l, s, b of shape (N + 1, *sample_shape) on the grid uniform in lambda from -log(sigma_max) to -log(sigma_min)."""

    l: torch.Tensor
    s: torch.Tensor
    b: torch.Tensor
    sigma_min: float
    sigma_max: float
    model_sha256: str | None = None
    _tables: dict[str, Tables] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.l, self.s, self.b = (torch.as_tensor(t, dtype=torch.float64).cpu() for t in (self.l, self.s, self.b))
        if not self.l.shape == self.s.shape == self.b.shape or self.l.ndim < 2 or self.l.shape[0] < 2:
            raise UserError(
                "statistics l, s, b need one shape (N + 1, ...) with N >= 1, got "
                f"{tuple(self.l.shape)}, {tuple(self.s.shape)}, {tuple(self.b.shape)}"
            )
        if not all(torch.isfinite(t).all() for t in (self.l, self.s, self.b)):
            raise UserError("the statistics contain NaN or infinite values; recompute them")
        if not 0 < self.sigma_min < self.sigma_max:
            raise UserError(f"statistics need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    @property
    def num_intervals(self) -> int:
        return self.l.shape[0] - 1

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.l.shape[1:])

    def lambdas(self) -> torch.Tensor:
        """The grid lambda_j = lambda_T + j (lambda_0 - lambda_T) / N, index 0 at sigma_max."""
        return torch.linspace(
            -math.log(self.sigma_max), -math.log(self.sigma_min), self.num_intervals + 1, dtype=torch.float64
        )

    def tables(self, device: torch.device) -> Tables:
        key = str(device)
        if key not in self._tables:
            self._tables[key] = Tables(self, device)
        return self._tables[key]


def snap_to_grid(sigmas: list[float], stats: EmpiricalStatistics) -> list[int]:
    """Grid indices nearest in lambda to each sigma, made strictly increasing (two steps never share a point)."""
    if sigmas[-1] <= 0:
        raise UserError("dpm-solver-v3 cannot step to sigma = 0: end the grid at the statistics' sigma_min")
    n = stats.num_intervals
    lam_t, lam_0 = -math.log(stats.sigma_max), -math.log(stats.sigma_min)
    positions = [n * (-math.log(s) - lam_t) / (lam_0 - lam_t) for s in sigmas]
    if positions[0] < -1e-6 or positions[-1] > n + 1e-6:
        raise UserError(
            f"the sigma grid [{sigmas[-1]:g}, {sigmas[0]:g}] leaves the "
            f"statistics' range [{stats.sigma_min:g}, {stats.sigma_max:g}]; "
            "sample within the range the statistics were computed for"
        )
    if len(sigmas) - 1 > n:
        raise UserError(
            f"{len(sigmas) - 1} steps do not fit on statistics with {n} "
            "grid intervals; use fewer steps or a finer statistics grid"
        )
    idx = [min(max(round(p), 0), n) for p in positions]
    snapped = list(idx)
    for k in range(1, len(snapped)):
        snapped[k] = max(snapped[k], snapped[k - 1] + 1)
    snapped[-1] = min(snapped[-1], n)
    for k in range(len(snapped) - 2, -1, -1):
        snapped[k] = min(snapped[k], snapped[k + 1] - 1)
    if snapped[0] < 0:
        raise UserError(
            f"{len(sigmas) - 1} steps do not fit between grid points "
            f"{idx[0]} and {idx[-1]} of the statistics; use fewer steps"
        )
    if snapped != idx:
        log.debug("dpm-solver-v3: grid indices %s moved to %s so that no two steps share a point", idx, snapped)
    return snapped


def corrector_sigma_limit(sigma_min: float, sigma_max: float) -> float:
    """sigma at VP time t = 0.5 of the VP-linear SDE fitted to the range: the half-corrector corrects below it."""
    beta_d, beta_min = vp_linear_fit(sigma_min, sigma_max)
    t = HALF_CORRECTOR_VP_TIME
    return math.sqrt(math.expm1(0.5 * beta_d * t**2 + beta_min * t))


class Point(NamedTuple):
    """An evaluated point: state x, its f = (1 - l) x - D and grid index j."""

    x: torch.Tensor
    f: torch.Tensor
    j: int


def vandermonde_derivatives(deltas: list[float], diffs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Solve sum_m delta_k^m g^(m) / m! = g_k - g_0 for g^(1..n) (eq. 13)."""
    n = len(deltas)
    r = torch.tensor([[d**m for m in range(1, n + 1)] for d in deltas], dtype=torch.float64)
    inv = torch.linalg.inv(r).tolist()
    return [math.factorial(m + 1) * sum(inv[m][k] * diffs[k] for k in range(n)) for m in range(n)]


def divided_difference_derivatives(nodes: list[float], values: list[torch.Tensor]) -> list[torch.Tensor]:
    """Pseudo-order estimates g^(k) = k! g[lambda_0, ..., lambda_k] (Newton divided differences, eq. 15-16)."""
    table = list(values)
    out = []
    for k in range(1, len(nodes)):
        table = [(table[m] - table[m + 1]) / (nodes[m] - nodes[m + k]) for m in range(len(table) - 1)]
        out.append(math.factorial(k) * table[0])
    return out


def local_update(tab: Tables, points: list[Point], j_t: int, pseudo: bool) -> torch.Tensor:
    """x at grid index j_t from the expansion point points[0] and derivative estimates from points[1:] (eq. 9, 14)."""
    s = points[0]
    js = s.j
    L, S, I, B, C = tab.L, tab.S, tab.I, tab.B, tab.C
    g = [torch.exp(S[js] - S[p.j]) * p.f - torch.exp(S[js]) * (B[p.j] - B[js]) for p in points]
    d_int = I[j_t] - I[js]
    decay = torch.exp(L[js] - L[j_t])
    x = decay * s.x - torch.exp(-L[j_t] - S[js]) * d_int * g[0] - torch.exp(-L[j_t]) * (C[j_t] - C[js] - B[js] * d_int)
    if len(points) > 1:
        lam = tab.lambdas
        deltas = [float(lam[p.j] - lam[js]) for p in points[1:]]
        if pseudo:
            derivs = divided_difference_derivatives([0.0, *deltas], g)
        else:
            derivs = vandermonde_derivatives(deltas, [gk - g[0] for gk in g[1:]])
        for k, d in enumerate(derivs, start=1):
            x = x - decay * tab.weight(js, j_t, k) * d
    return x


def dpm_solver_v3(
    denoiser: DenoiserFn,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    cond: Any = None,
    callback: StepCallback | None = None,
    afs: Afs = False,
    denoise_to_zero: bool = False,
    stats: EmpiricalStatistics | str | None = None,
    stats_sigma_min: float | None = None,
    stats_sigma_max: float | None = None,
    order: Literal[1, 2, 3] = 3,
    predictor_pseudo: bool = False,
    corrector: bool = True,
    corrector_pseudo: bool = False,
    lower_order_final: bool = True,
    half_corrector: bool = False,
) -> torch.Tensor:
    """Multistep DPM-Solver-v3 (Algorithm 2), 1 NFE per step; the grid is snapped to the statistics' grid.

    Predictor orders ramp up 1, 2, ..., ``order`` and, with ``lower_order_final``, drop to 1 at the end.
    The corrector (UniPC-style) re-solves the step just taken with the fresh evaluation as an extra point
    (points t_{i-1}, t_i, t_{i-2}, ...; order = previous predictor order, +1 with ``corrector_pseudo``)
    and keeps f of that evaluation, so it costs no NFE. ``half_corrector`` corrects only points with
    sigma at or below the VP time t = 0.5 (the paper's convention; the authors' code does the opposite).
    ``stats`` is a statistics folder (loaded by the prepare hook in ``diffsampler.ems.format``) or loaded
    :class:`EmpiricalStatistics`; ``stats_sigma_min/max`` state the sigma range of folders without metadata.
    """
    if not isinstance(stats, EmpiricalStatistics):
        raise UserError(
            "dpm-solver-v3 needs empirical model statistics: pass -o stats=FOLDER (made by `diffsampler compute-ems`)"
        )
    if tuple(x.shape[1:]) != stats.sample_shape:
        raise UserError(
            f"statistics of sample shape {stats.sample_shape} do not fit samples of shape {tuple(x.shape[1:])}"
        )
    idx = snap_to_grid(sigmas, stats)
    tab = stats.tables(x.device)
    grid_sigmas = [math.exp(-float(tab.lambdas[j])) for j in idx]
    limit = corrector_sigma_limit(stats.sigma_min, stats.sigma_max) if half_corrector else math.inf
    steps = len(idx) - 1
    state = x.to(torch.float64)
    history: list[Point] = []
    previous_order = 0
    for step in range(1, steps + 1):
        j, sigma = idx[step - 1], grid_sigmas[step - 1]
        if afs_on(afs) and step == 1:
            denoised = state - sigma * afs_derivative(state, sigma, afs)
        else:
            denoised = denoiser(state.to(x.dtype), sigma, cond).to(torch.float64)
        f = (1 - tab.l[j]) * state - denoised
        history.append(Point(state, f, j))
        c = previous_order + int(corrector_pseudo)
        if corrector and c > 1 and sigma <= limit:
            points = [history[-2], history[-1], *history[-3::-1]][:c]
            state = local_update(tab, points, j, corrector_pseudo)
            history[-1] = Point(state, f, j)
        if callback is not None:
            report_step(callback, step - 1, sigma, state.to(x.dtype), denoised.to(x.dtype))
        p = min(step, order)
        if lower_order_final:
            p = min(p, steps + 1 - step)
        state = local_update(tab, history[::-1][:p], idx[step], predictor_pseudo)
        previous_order = p
        history = history[-4:]
    return finish(denoiser, state.to(x.dtype), grid_sigmas, denoise_to_zero, cond)
