"""Streaming per-element means and covariances in float64, memory independent of the number of samples.

Batches are merged with the pairwise update of Chan, Golub and LeVeque (1979):
M_xy = M_xy^A + M_xy^B + (mean_x^B - mean_x^A)(mean_y^B - mean_y^A) n_A n_B / (n_A + n_B).
"""

from __future__ import annotations

import torch


class StreamingMoments:
    """Means of V variables and the co-moments of chosen pairs, per element, accumulated batch by batch."""

    def __init__(self, num_vars: int, pairs: tuple[tuple[int, int], ...]) -> None:
        self.num_vars = num_vars
        self.pairs = pairs
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.comoment: torch.Tensor | None = None

    def batch(self, values: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
        """(count, means, co-moments of the pairs) of one batch ``values`` of shape (V, B, *element_shape), float64."""
        v = values.to(torch.float64)
        mean_b = v.mean(dim=1)
        centred = v - mean_b[:, None]
        return v.shape[1], mean_b, torch.stack([(centred[i] * centred[j]).sum(dim=0) for i, j in self.pairs])

    def merge(self, n_b: int, mean_b: torch.Tensor, co_b: torch.Tensor) -> None:
        """Fold in the moments of a batch (as ``batch`` returns them)."""
        if self.mean is None or self.comoment is None:
            self.count, self.mean, self.comoment = n_b, mean_b, co_b
            return
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.comoment = (
            self.comoment + co_b + torch.stack([delta[i] * delta[j] for i, j in self.pairs]) * (n_a * n_b / n)
        )
        self.mean = self.mean + delta * (n_b / n)
        self.count = n

    def update(self, values: torch.Tensor) -> None:
        """Add a batch ``values`` of shape (V, B, *element_shape); computed in float64."""
        self.merge(*self.batch(values))

    def covariances(self) -> torch.Tensor:
        """Population covariances of the pairs, shape (P, *element_shape)."""
        if self.comoment is None:
            raise ValueError("no samples were added")
        return self.comoment / self.count
