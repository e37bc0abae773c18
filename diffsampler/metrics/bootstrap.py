"""Bootstrap replicates of a cell's statistic over its samples, the 95% interval, and the paired tie test.

Every cell of a run scores the same latents, so sample i of one cell and sample i of another come from the same
noise. The resampling is therefore shared: one (B, n) matrix of counts, drawn from a generator seeded by the run's
seed, n and B, says how often each sample index enters replicate b (``resample_counts``; Efron's bootstrap, with
replacement). Each cell stores its B replicate values; the difference of two cells' replicates is then a paired
bootstrap of the difference of the two statistics (Efron & Tibshirani 1993, ch. 16).

Intervals are basic (reverse-percentile) bootstrap intervals, [2 t - q(1 - a/2), 2 t - q(a/2)] with t the
statistic and q the quantiles of its replicates (Davison & Hinkley 1997, eq. 5.6): unlike the plain percentile
interval they correct, to first order, the upward bias of distances such as the Frechet distance, whose
replicates sit above the estimate as the estimate sits above the truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

RESAMPLES = 200
"""Bootstrap replicates per cell: the 2.5% and 97.5% quantiles of 200 replicates vary by about a tenth of the
interval's width, and the Frechet replicates of 5,000 128-d features cost about a second (docs/rankings.md)."""
LEVEL = 0.95
Z_95 = 1.959963984540054
"""The standard normal quantile of 0.975 (mean +- Z_95 se is a 95% interval)."""


def resample_counts(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, n) float64 counts: how often sample i is drawn (with replacement, n draws) into replicate b.

    The generator is seeded by (seed, n, resamples), so every cell of a run with the same sample count gets the
    same matrix, and the replicates of two cells are paired.
    """
    rng = np.random.default_rng([int(seed), int(n), int(resamples)])
    draws = rng.integers(0, n, size=(resamples, n))
    counts = np.zeros((resamples, n))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
    return counts


def basic_interval(value: float, replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The basic bootstrap interval [2 t - q(1 - a/2), 2 t - q(a/2)] of the statistic ``value`` = t."""
    alpha = 1.0 - level
    lo_q, hi_q = np.quantile(np.asarray(replicates, np.float64), [alpha / 2, 1 - alpha / 2])
    return float(2 * value - hi_q), float(2 * value - lo_q)


def weighted_means(per_sample: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(B,) replicates of the mean of per-sample values (n,) under the resampling ``counts`` (B, n)."""
    return counts @ np.asarray(per_sample, np.float64) / counts.sum(axis=1)


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_replicates(
    features: np.ndarray, ref_mu: np.ndarray, ref_sigma: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """(B,) replicates of the squared Frechet distance (arXiv 1706.08500 eq. 6) of resampled features (n, D) to the
    fixed reference N(ref_mu, ref_sigma).

    With R = ref_sigma^(1/2) (one eigendecomposition), Tr (S R^2)^(1/2) = Tr (R S R)^(1/2), and R S R is the
    covariance of the features mapped by R: so each replicate needs one weighted covariance and one symmetric
    eigenvalue problem (eigvalsh, D x D), no general matrix square root. Float64 throughout.
    """
    x = np.asarray(features, np.float64)
    mu, root = np.asarray(ref_mu, np.float64), _symmetric_sqrt(np.asarray(ref_sigma, np.float64))
    z, trace_ref = x @ root, float(np.trace(ref_sigma))
    out = np.empty(counts.shape[0])
    for b, weights in enumerate(counts):
        n = weights.sum()
        mean_x, mean_z = weights @ x / n, weights @ z / n
        cz = (z - mean_z) * np.sqrt(weights)[:, None]
        trace_s = float(weights @ ((x - mean_x) ** 2).sum(axis=1)) / (n - 1)
        root_trace = np.sqrt(np.clip(np.linalg.eigvalsh(cz.T @ cz / (n - 1)), 0.0, None)).sum()
        diff = mean_x - mu
        out[b] = diff @ diff + trace_s + trace_ref - 2.0 * root_trace
    return out


def tied(value_a: float, replicates_a: np.ndarray, value_b: float, replicates_b: np.ndarray) -> bool:
    """True when the basic 95% interval of the paired difference a - b (replicates resampled alike) holds 0."""
    diff = np.asarray(replicates_a, np.float64) - np.asarray(replicates_b, np.float64)
    low, high = basic_interval(value_a - value_b, diff)
    return low <= 0.0 <= high


@dataclass(frozen=True)
class Score:
    """A metric's value with its 95% interval [low, high] (how it was made in ``method``) and its bootstrap
    replicates under the run's shared resampling (for the paired tie test); a bare value has neither."""

    value: float | None = None
    low: float | None = None
    high: float | None = None
    method: str | None = None
    replicates: tuple[float, ...] | None = None

    def fields(self) -> dict[str, Any]:
        """The record's fields: value, low, high, interval (the method), replicates (a list, or None)."""
        reps = None if self.replicates is None else [float(r) for r in self.replicates]
        return {"value": self.value, "low": self.low, "high": self.high, "interval": self.method, "replicates": reps}


def as_score(result: float | Score) -> Score:
    """A metric's result as a Score (a plain number has no interval)."""
    return result if isinstance(result, Score) else Score(float(result))


def bootstrap_score(
    value: float, replicates: np.ndarray, floor: float | None = None, ceiling: float | None = None
) -> Score:
    """The basic bootstrap interval of ``value`` from its replicates, clipped to the statistic's range [floor,
    ceiling] (0 for a distance, which cannot be negative; 1 for a share): clipping keeps the coverage."""
    low, high = basic_interval(value, replicates)
    if floor is not None:
        low, high = max(low, floor), max(high, floor)
    if ceiling is not None:
        low, high = min(low, ceiling), min(high, ceiling)
    method = f"basic bootstrap over samples, {len(replicates)} resamples"
    return Score(float(value), low, high, method, tuple(float(r) for r in replicates))


def frechet_score(value: float, features: np.ndarray, ref_mu: np.ndarray, ref_sigma: np.ndarray, seed: int) -> Score:
    """``value`` (the Frechet distance of ``features`` to the reference) with its bootstrap interval."""
    counts = resample_counts(len(features), RESAMPLES, seed)
    return bootstrap_score(value, frechet_replicates(features, ref_mu, ref_sigma, counts), floor=0.0)


def rmse_score(value: float, per_sample_mse: np.ndarray, seed: int) -> Score:
    """rmse = sqrt(mean e_i) over per-sample mean squared errors e_i, with the interval rmse +- 1.96 se, se the
    delta-method standard error sd(e) / (2 rmse sqrt(n)); replicates sqrt(mean e) under the shared resampling."""
    e = np.asarray(per_sample_mse, np.float64)
    if len(e) < 2 or value <= 0:
        return Score(float(value))
    se = float(e.std(ddof=1) / np.sqrt(len(e)) / (2.0 * value))
    replicates = np.sqrt(weighted_means(e, resample_counts(len(e), RESAMPLES, seed)))
    method = "mean +- 1.96 standard errors across samples (delta method)"
    return Score(float(value), value - Z_95 * se, value + Z_95 * se, method, tuple(float(r) for r in replicates))


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """KID's kernel k(x, y) = (x.y / D + 1)^3 (arXiv 1801.01401), float64."""
    return (np.asarray(a, np.float64) @ np.asarray(b, np.float64).T / a.shape[1] + 1.0) ** 3


def kid_score(value: float, fake: np.ndarray, real: np.ndarray, seed: int) -> Score:
    """KID ``value`` with a basic bootstrap interval over the fakes.

    The replicates are those of the unbiased MMD^2 U-statistic of the fakes against fixed real features R, the
    fakes weighted by the resampling counts w over pairs of distinct samples (a sample drawn twice is not paired
    with itself, which would add its large k(y, y)):
    U(w) = sum_{i != j} w_i w_j K_ij / sum_{i != j} w_i w_j - 2 sum_i w_i mean_r k(r, y_i) / sum w
    + mean_{r != r'} k(r, r'), shifted by value - U(1), so that they spread about the subset-averaged KID as U(w)
    spreads about U(1).
    """
    counts = resample_counts(len(fake), RESAMPLES, seed)
    m = len(real)
    k_fake, k_real = polynomial_kernel(fake, fake), polynomial_kernel(real, real)
    real_term = (k_real.sum() - np.trace(k_real)) / (m * (m - 1))
    cross, diagonal = polynomial_kernel(real, fake).mean(axis=0), np.diag(k_fake)

    def u(weights: np.ndarray) -> np.ndarray:
        total, squares = weights.sum(axis=1), (weights**2).sum(axis=1)
        pairs = ((weights @ k_fake) * weights).sum(axis=1) - (weights**2) @ diagonal
        return pairs / (total**2 - squares) - 2.0 * weights @ cross / total + real_term

    replicates = u(counts) - u(np.ones((1, len(fake))))[0] + value
    return bootstrap_score(value, replicates)


SYMMETRY = 0.1
"""An interval whose midpoint is within this share of its half-width from the value is shown as ± half-width."""


def interval_text(value: float, low: float, high: float) -> str:
    """' ± h' (h half the width, 2 significant digits, positional: 130, 3.1, 0.0042) when the interval is centred
    on the value, else ' [low, high]' (4 significant digits): a bias-corrected interval of a biased statistic
    such as the Frechet distance may lie beside it."""
    half = (high - low) / 2
    if abs((high + low) / 2 - value) <= SYMMETRY * half:
        return " ± " + np.format_float_positional(half, precision=2, unique=False, fractional=False, trim="-")
    return f" [{low:.4g}, {high:.4g}]"
