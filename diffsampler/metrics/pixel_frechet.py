"""The Frechet distance in pixel space between samples and a known Gaussian N(mu, C) (arXiv 1706.08500 eq. 6).

d^2 = |m - mu|^2 + Tr(S) + Tr(C) - 2 Tr (S C)^(1/2), with m, S the sample mean and unbiased covariance.
The same number as ``frechet.frechet_distance`` on (m, S, mu, C), computed without a D x D matrix
square root per call: with S = X^T X / (n - 1) for the centred samples X, the eigenvalues of S C are
those of A^T A with A = X C^(1/2) / sqrt(n - 1), so Tr (S C)^(1/2) is the sum of the singular values
of A. C^(1/2) is computed once per model. The linear algebra runs in float64 with torch.
"""

from __future__ import annotations

import numpy as np
import torch

from diffsampler.errors import UserError


def symmetric_sqrt(cov: torch.Tensor | np.ndarray) -> torch.Tensor:
    """C^(1/2) of a symmetric positive semi-definite matrix by its eigendecomposition (float64)."""
    values, vectors = torch.linalg.eigh(torch.as_tensor(cov, dtype=torch.float64))
    return (vectors * values.clamp_min(0.0).sqrt()) @ vectors.T


def frechet_to_gaussian(
    samples: torch.Tensor | np.ndarray, mean: torch.Tensor | np.ndarray, cov_sqrt: torch.Tensor | np.ndarray
) -> float:
    """Squared Frechet distance between the samples' Gaussian fit and N(mean, cov_sqrt @ cov_sqrt)."""
    x = torch.as_tensor(samples).detach().cpu().to(torch.float64)
    x = x.reshape(x.shape[0], -1)
    mu = torch.as_tensor(mean, dtype=torch.float64).cpu()
    root = torch.as_tensor(cov_sqrt, dtype=torch.float64).cpu()
    n, dim = x.shape
    if n < 2:
        raise UserError(f"the pixel Frechet distance needs at least 2 samples, got {n}")
    if mu.shape != (dim,) or root.shape != (dim, dim):
        raise UserError(f"samples of {dim} values do not match statistics of shape {tuple(mu.shape)}")
    m = x.mean(dim=0)
    centred = x - m
    a = centred @ root / (n - 1) ** 0.5
    trace_sqrt = float(torch.linalg.svdvals(a).sum())
    trace_s = float((centred**2).sum() / (n - 1))
    trace_c = float((root**2).sum())
    diff = m - mu
    return float(diff @ diff + trace_s + trace_c - 2.0 * trace_sqrt)
