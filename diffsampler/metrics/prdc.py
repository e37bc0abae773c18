"""Precision, recall, density and coverage of samples against real data in a feature space (PRDC).

Naeem et al., "Reliable Fidelity and Diversity Metrics for Generative Models", arXiv 2002.09797, eqs. 1-4, with
the k-nearest-neighbour balls B(x, NND_k(x)) (NND_k: the distance to the k-th nearest other point of the same set)
and strict inequalities as in the authors' released code. For real features X (N) and fake features Y (M):

- precision = 1/M sum_j 1[Y_j in some real ball]                      (fidelity; blur and haze lower it)
- recall    = 1/N sum_i 1[X_i in some fake ball, fake radii]          (diversity)
- density   = 1/(kM) sum_j #{i : Y_j in B(X_i, NND_k(X_i))}          (fidelity counting overlaps; 1 on real data)
- coverage  = 1/N sum_i 1[some Y_j in B(X_i, NND_k(X_i))]             (diversity with real balls only)

Bootstrap replicates resample the fakes with the run's shared counts (``diffsampler.metrics.bootstrap``): precision
and density are means over fakes; coverage and recall count the reals reached by the fakes drawn at least once,
the fake radii kept from the full set (a duplicated point would otherwise shrink its neighbours' radii to 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffsampler.errors import UserError
from diffsampler.metrics.bootstrap import weighted_means

NEAREST_K = 5
"""k of the nearest-neighbour balls (the paper's choice, arXiv 2002.09797 sec. 4)."""
NAMES = ("precision", "recall", "density", "coverage")


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Euclidean distances in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(squared, 0.0, None))


def knn_radii(points: np.ndarray, k: int = NEAREST_K) -> np.ndarray:
    """NND_k of every point: the distance to its k-th nearest other point of the same set."""
    if not 1 <= k < len(points):
        raise UserError(f"PRDC's k must be at least 1 and below the number of points ({len(points)}), got {k}")
    distances = pairwise_distances(points, points)
    return np.partition(distances, k, axis=1)[:, k]  # column 0 is the point itself (distance 0)


@dataclass(frozen=True)
class PRDCBalls:
    """Which fakes fall in which real ball (and which reals in which fake ball), the k used."""

    in_real_ball: np.ndarray
    """(N, M) bool: |Y_j - X_i| < NND_k(X_i)."""
    in_fake_ball: np.ndarray
    """(N, M) bool: |X_i - Y_j| < NND_k(Y_j)."""
    k: int

    def values(self) -> dict[str, float]:
        """precision, recall, density, coverage (arXiv 2002.09797 eqs. 1-4)."""
        return {
            "precision": float(self.in_real_ball.any(axis=0).mean()),
            "recall": float(self.in_fake_ball.any(axis=1).mean()),
            "density": float(self.in_real_ball.sum(axis=0).mean() / self.k),
            "coverage": float(self.in_real_ball.any(axis=1).mean()),
        }

    def replicates(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """(B,) replicates of each of the four under the fakes' resampling ``counts`` (B, M)."""
        present = (counts > 0).astype(np.float32).T  # (M, B)
        return {
            "precision": weighted_means(self.in_real_ball.any(axis=0), counts),
            "recall": ((self.in_fake_ball.astype(np.float32) @ present) > 0).mean(axis=0).astype(np.float64),
            "density": weighted_means(self.in_real_ball.sum(axis=0) / self.k, counts),
            "coverage": ((self.in_real_ball.astype(np.float32) @ present) > 0).mean(axis=0).astype(np.float64),
        }


def prdc_balls(real: np.ndarray, fake: np.ndarray, k: int = NEAREST_K, real_radii: np.ndarray | None = None):
    """The ball memberships of real (N, D) and fake (M, D) features; ``real_radii`` may be given (computed once for
    a fixed reference)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise UserError(f"PRDC needs two (N, D) feature sets with equal D, got {real.shape} and {fake.shape}")
    radii = knn_radii(real, k) if real_radii is None else np.asarray(real_radii, np.float64)
    distances = pairwise_distances(real, fake)
    return PRDCBalls(distances < radii[:, None], distances < knn_radii(fake, k)[None, :], k)
