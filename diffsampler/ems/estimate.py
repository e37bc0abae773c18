"""Estimating DPM-Solver-v3's empirical model statistics l, s, b per element (arXiv 2310.13268, eq. 5, 11, 56-63).

EDM form (alpha = 1, lambda = -log sigma, dx/dlambda = D - x). At each grid point, for x = x0 + sigma z with
the data points x0, fresh noise z and a fresh Rademacher probe v, two forward-mode JVPs of the denoiser give

* D and J v with J = dD/dx: l = E[diag(sigma d eps/dx)] = 1 - E[v * J v] (Hutchinson, unbiased for Rademacher v);
* g = dD/dlambda along the ODE: the JVP with tangents (D - x, -sigma) in (x, sigma).

With a = x, p = x - D (= sigma eps) and q = p + g, the statistics' f and its total derivative are linear in them:
f = p - l a and f' = l p - q - l' a (l' = dl/dlambda). So per grid point only the means of a, p, q and five
covariances are streamed (float64), and s = Cov(f, f') / Var(f), b = E[f'] - s E[f] follow in closed form
once l and l' are known on the whole grid.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from diffsampler.distributed import World, gather_objects
from diffsampler.ems.moments import StreamingMoments

# torch's forward-mode AD loads its JVP decompositions through torch.jit.script the first time, which warns
# that torch.jit.script is deprecated: torch's own use, nothing a user can act on
# (torch/_decomp/decompositions_for_jvp.py).
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)

JVP_ATTENTION = [SDPBackend.MATH]
"""Attention backend under forward-mode AD: the fused CPU kernel has no JVP rule (torch 2.14), the plain one has."""

PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2))
"""Covariances streamed per grid point, of (a, p, q): aa, ap, aq, pp, pq."""
ROWS = 9
"""Rows of one grid point's record: l, mean a, mean p, mean q, then the five covariances."""
SMOOTH_HALF_WIDTH = 0.05
"""dl/dlambda is averaged over grid points within +-0.05 in lambda: the authors' 5 points either side on their
N = 1200 grids. A fixed number of points would widen the window (and its bias) on coarse grids."""
RIDGE = 1e-9
"""s = Cov(f, f') / (Var(f) + RIDGE * Var(p)): where f (the part of sigma eps that l x does not explain) has a
variance at the level of rounding relative to sigma eps, the fit of f' on f is a ratio of rounding errors and s is
shrunk to 0; elsewhere the shrinkage is negligible. Var(f) = 0 (Gaussian data with exact l) gives s = 0. Larger
ridges (1e-3 to 1e-1 of Var(p)) were tried on Gaussian mixtures and neither helped nor hurt consistently; they do
not cure the Monte-Carlo noise of small K, which needs more data points."""
NOISE_STREAM = 0x454D53
"""Separates the EMS noise streams from the per-sample latent streams of `diffsampler.latents`."""

DenoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def lambda_grid(sigma_min: float, sigma_max: float, num_intervals: int) -> np.ndarray:
    """N + 1 lambdas uniform from -log(sigma_max) to -log(sigma_min), float64."""
    return np.linspace(-math.log(sigma_max), -math.log(sigma_min), num_intervals + 1)


def point_generator(seed: int, index: int) -> torch.Generator:
    """The CPU generator of the noise and probes at grid point ``index`` (independent of the device)."""
    state = np.random.SeedSequence([seed, NOISE_STREAM, index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def point_record(
    denoise: DenoiseFn,
    data: torch.Tensor,
    sigma: float,
    generator: torch.Generator,
    batch: int,
    device: torch.device,
    world: World | None = None,
) -> torch.Tensor:
    """The (ROWS, *sample_shape) float64 record of one grid point from all data points, ``batch`` at a time.

    ``denoise(x, sigma)`` takes sigma as a float64 tensor of shape (B,) so that it can carry a tangent.
    Under torchrun batch k runs on rank k mod size (every rank draws all the noise, so each batch sees
    the same noise as in one process) and the per-batch moments are folded in batch order on the CPU:
    the record is the one a single process makes.
    """
    world = world or World()
    moments = StreamingMoments(3, PAIRS)
    parts: dict[int, tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]] = {}
    for k, start in enumerate(range(0, data.shape[0], batch)):
        x0 = data[start : start + batch]
        z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        v = torch.randint(0, 2, x0.shape, generator=generator).to(x0.dtype) * 2 - 1
        if k % world.size != world.rank:
            continue
        x = (x0 + sigma * z).to(device)
        v = v.to(device)
        sig = torch.full((x.shape[0],), sigma, dtype=torch.float64, device=device)
        with torch.no_grad(), sdpa_kernel(JVP_ATTENTION):
            denoised, jv = torch.func.jvp(lambda y, s=sig: denoise(y, s), (x,), (v,))
            _, g = torch.func.jvp(denoise, (x, sig), (denoised - x, -sig))
        p = (x - denoised).to(torch.float64)
        n_b, mean_b, co_b = moments.batch(torch.stack([x.to(torch.float64), p, p + g.to(torch.float64)]))
        parts[k] = ((1 - v * jv).to(torch.float64).sum(dim=0).cpu(), n_b, mean_b.cpu(), co_b.cpu())
    for gathered in gather_objects(parts, world) if world.size > 1 else []:
        parts.update(gathered)
    l_sum = torch.zeros(data.shape[1:], dtype=torch.float64)
    for k in sorted(parts):
        l_b, n_b, mean_b, co_b = parts[k]
        l_sum += l_b
        moments.merge(n_b, mean_b, co_b)
    assert moments.mean is not None
    return torch.cat([(l_sum / moments.count)[None], moments.mean, moments.covariances()])


def smoothed_derivative(values: np.ndarray, lambdas: np.ndarray, half_width: float = SMOOTH_HALF_WIDTH) -> np.ndarray:
    """d values / d lambda along axis 0 (uniform grid) by second-order finite differences, then a centred moving
    average over +-half_width in lambda, narrowed symmetrically near the ends (so it is exact for quadratics)."""
    half_window = round(half_width / abs(lambdas[1] - lambdas[0]))
    deriv = np.gradient(values, lambdas, axis=0, edge_order=2)
    csum = np.concatenate([np.zeros_like(deriv[:1]), np.cumsum(deriv, axis=0)])
    n = deriv.shape[0]
    j = np.arange(n)
    half = np.minimum(np.minimum(j, n - 1 - j), half_window)
    lo, hi = j - half, j + half + 1
    return (csum[hi] - csum[lo]) / (2 * half + 1).reshape(-1, *([1] * (deriv.ndim - 1)))


def statistics_from_records(records: np.ndarray, lambdas: np.ndarray, ridge: float = RIDGE) -> dict[str, Any]:
    """l, s, b (each (N + 1, *shape), float64) and dl/dlambda from the stacked records (N + 1, ROWS, *shape)."""
    l = records[:, 0]
    mean_a, mean_p, mean_q = records[:, 1], records[:, 2], records[:, 3]
    c_aa, c_ap, c_aq, c_pp, c_pq = (records[:, 4 + k] for k in range(5))
    l_d = smoothed_derivative(l, lambdas)
    mean_f = mean_p - l * mean_a
    mean_fd = l * mean_p - mean_q - l_d * mean_a
    var_f = c_pp - 2 * l * c_ap + l**2 * c_aa
    cov = l * c_pp - c_pq - l_d * c_ap - l**2 * c_ap + l * c_aq + l * l_d * c_aa
    denominator = np.maximum(var_f, 0.0) + ridge * c_pp
    informative = denominator > 0
    s = np.where(informative, cov / np.where(informative, denominator, 1.0), 0.0)
    b = mean_fd - s * mean_f
    return {"l": l, "s": s, "b": b, "l_d": l_d, "shrunk": int((var_f < ridge * c_pp).sum())}
