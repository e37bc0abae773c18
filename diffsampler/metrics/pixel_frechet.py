"""The Frechet distance in pixel space between samples and a known Gaussian N(mu, C) (arXiv 1706.08500 eq. 6).

d^2 = |m - mu|^2 + Tr(S) + Tr(C) - 2 Tr (S C)^(1/2), with m, S the sample mean and unbiased covariance.
The same number as ``frechet.frechet_distance`` on (m, S, mu, C), computed without a D x D matrix
square root per call: with S = X^T X / (n - 1) for the centred samples X, the eigenvalues of S C are
those of A^T A with A = X C^(1/2) / sqrt(n - 1), so Tr (S C)^(1/2) is the sum of the singular values
of A. C^(1/2) is computed once per model (scipy's sqrtm on 1024 x 1024 takes tens of seconds here).
"""

from __future__ import annotations

import numpy as np
import torch

from diffsampler.errors import UserError


def symmetric_sqrt(cov: np.ndarray) -> np.ndarray:
    """C^(1/2) of a symmetric positive semi-definite matrix by its eigendecomposition."""
    values, vectors = np.linalg.eigh(np.asarray(cov, np.float64))
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_to_gaussian(samples: torch.Tensor | np.ndarray, mean: np.ndarray, cov_sqrt: np.ndarray) -> float:
    """Squared Frechet distance between the samples' Gaussian fit and N(mean, cov_sqrt @ cov_sqrt)."""
    x = np.asarray(samples.detach().cpu() if isinstance(samples, torch.Tensor) else samples, np.float64)
    x = x.reshape(x.shape[0], -1)
    n, dim = x.shape
    if n < 2:
        raise UserError(f"the pixel Frechet distance needs at least 2 samples, got {n}")
    if mean.shape != (dim,) or cov_sqrt.shape != (dim, dim):
        raise UserError(f"samples of {dim} values do not match statistics of shape {mean.shape}")
    m = x.mean(axis=0)
    centred = x - m
    a = centred @ cov_sqrt / np.sqrt(n - 1)
    if n <= dim:
        trace_sqrt = float(np.linalg.svd(a, compute_uv=False).sum())
    else:
        trace_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh(a.T @ a), 0.0, None)).sum())
    trace_s = float((centred**2).sum() / (n - 1))
    trace_c = float((cov_sqrt**2).sum())
    diff = m - mean
    return float(diff @ diff + trace_s + trace_c - 2.0 * trace_sqrt)
