"""FID and KID of image sets from streamed Inception features (clean-fid's "clean" protocol).

FID (Heusel et al., arXiv 1706.08500, eq. 6) is the Frechet distance between Gaussians fitted to the
2048-d features; the mean and unbiased covariance accumulate batch by batch in float64, so memory
is O(D^2) whatever the number of images. KID (Binkowski et al., arXiv 1801.01401) is the unbiased
MMD^2 with the kernel k(x, y) = (x.y / D + 1)^3, averaged over random subsets as clean-fid does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch
from torch import nn

from diffsampler.distributed import World, gather_objects
from diffsampler.errors import UserError
from diffsampler.metrics.frechet import frechet_distance

Progress = Optional[Callable[[int], None]]


@dataclass
class Statistics:
    """Mean and covariance of features (the ``mu``/``sigma`` .npz layout of EDM and clean-fid)."""

    mu: np.ndarray
    sigma: np.ndarray
    num_images: int = 0
    image_size: tuple[int, int] | None = None
    features: np.ndarray | None = None


class FeatureMoments:
    """Running mean and unbiased covariance of feature vectors, in float64 on the features' device.

    Sums are taken about a fixed shift (the first batch's mean) to avoid cancellation:
    cov = (sum (x - s)(x - s)^T - n (m - s)(m - s)^T) / (n - 1).
    """

    def __init__(self) -> None:
        self.count = 0
        self.shift: torch.Tensor | None = None
        self.total: torch.Tensor | None = None
        self.gram: torch.Tensor | None = None

    def update(self, features: torch.Tensor) -> None:
        feats = features.detach().double()
        if feats.ndim != 2:
            raise ValueError(f"features must be (N, D), got {tuple(feats.shape)}")
        if not torch.isfinite(feats).all():
            raise UserError(
                "the Inception features contain NaN or infinite values; check the images and the weights file"
            )
        if self.shift is None:
            self.shift = feats.mean(dim=0)
            self.total = torch.zeros_like(self.shift)
            self.gram = torch.zeros(feats.shape[1], feats.shape[1], dtype=feats.dtype, device=feats.device)
        centred = feats - self.shift
        self.total += centred.sum(dim=0)
        self.gram += centred.T @ centred
        self.count += feats.shape[0]

    def central(self) -> tuple[int, torch.Tensor | None, torch.Tensor | None]:
        """(n, mean, M2 = sum (x - mean)(x - mean)^T) on the CPU; (0, None, None) when nothing was seen."""
        if self.count == 0 or self.total is None or self.gram is None or self.shift is None:
            return 0, None, None
        offset = self.total / self.count
        return self.count, (self.shift + offset).cpu(), (self.gram - self.count * torch.outer(offset, offset)).cpu()

    def statistics(self, world: World | None = None) -> Statistics:
        """Mean and unbiased covariance; under torchrun, of every rank's features together.

        Ranks are merged in rank order with the pairwise update of Chan et al. (1979):
        M2 = M2_a + M2_b + d d^T n_a n_b / (n_a + n_b), d = mean_b - mean_a.
        """
        count, mean, m2 = 0, None, None
        for n_b, mean_b, m2_b in gather_objects(self.central(), world or World()):
            if n_b == 0:
                continue
            if mean is None or m2 is None:
                count, mean, m2 = n_b, mean_b, m2_b
                continue
            delta, n = mean_b - mean, count + n_b
            m2 = m2 + m2_b + torch.outer(delta, delta) * (count * n_b / n)
            mean, count = mean + delta * (n_b / n), n
        if count < 2 or mean is None or m2 is None:
            raise UserError(f"FID needs at least 2 images per set, got {count}")
        return Statistics(mean.numpy(), (m2 / (count - 1)).numpy(), count)


def image_batches(images: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
    """uint8 (N, H, W, C) -> uint8 tensors (B, C, H, W), one batch at a time."""
    if batch_size < 1:
        raise UserError(f"--batch-size must be positive, got {batch_size}")
    for start in range(0, len(images), batch_size):
        yield torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size].transpose(0, 3, 1, 2)))


def model_range_to_uint8(samples: torch.Tensor) -> torch.Tensor:
    """Samples in [-1, 1] (N, C, H, W) -> uint8 round((x + 1) * 127.5), clipped, on their own device (as EDM saves
    PNGs)."""
    if not torch.isfinite(samples).all():
        raise UserError("the samples contain NaN or infinite values; check the model and the solver")
    return ((samples.detach().float() + 1.0) * 127.5).round_().clamp_(0.0, 255.0).to(torch.uint8)


def batch_statistics(
    extractor: nn.Module,
    batches: Iterable[torch.Tensor],
    keep_features: bool = False,
    progress: Progress = None,
    world: World | None = None,
) -> Statistics:
    """Statistics of ``extractor`` features of streamed uint8 (B, C, H, W) batches; memory O(D^2) unless
    ``keep_features``.

    Under torchrun every rank passes the same batches and extracts features of every size-th one
    (batch k on rank k mod size); the moments are then merged across ranks.
    """
    world = world or World()
    if keep_features and world.size > 1:
        raise UserError("KID keeps every feature vector and is not computed under torchrun; run it in one process")
    moments, kept, size = FeatureMoments(), [], None
    for k, batch in enumerate(batches):
        if k % world.size != world.rank:
            continue
        if size is None:
            size = (int(batch.shape[-2]), int(batch.shape[-1]))
        elif (int(batch.shape[-2]), int(batch.shape[-1])) != size:
            raise UserError(f"image batches differ in size: {size} then {tuple(batch.shape[-2:])}")
        feats = extractor(batch)
        moments.update(feats)
        if keep_features:
            kept.append(feats.cpu().numpy())
        if progress is not None:
            progress(len(batch))
    stats = moments.statistics(world)
    stats.image_size = size
    stats.features = np.concatenate(kept) if keep_features else None
    return stats


def feature_statistics(
    extractor: nn.Module,
    images: np.ndarray,
    batch_size: int,
    keep_features: bool = False,
    progress: Progress = None,
    world: World | None = None,
) -> Statistics:
    """Statistics of ``extractor`` features of uint8 (N, H, W, C) images; features kept only if asked (KID)."""
    return batch_statistics(extractor, image_batches(images, batch_size), keep_features, progress, world)


def fid_from_statistics(a: Statistics, b: Statistics) -> float:
    """FID between two sets of statistics (clean-fid's formula, diffsampler.metrics.frechet)."""
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def kernel_inception_distance(
    feats1: np.ndarray, feats2: np.ndarray, num_subsets: int = 100, max_subset_size: int = 1000, seed: int = 0
) -> float:
    """KID: mean over subsets of size m of the unbiased MMD^2 with k(x, y) = (x.y / D + 1)^3.

    Subsets are drawn as clean-fid draws them (from set 2, then set 1, without replacement) from a
    generator seeded with ``seed``, so the value is reproducible.
    """
    f1, f2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise UserError(f"KID needs two (N, D) feature sets with equal D, got {f1.shape} and {f2.shape}")
    dim, m = f1.shape[1], min(len(f1), len(f2), max_subset_size)
    if m < 2:
        raise UserError(f"KID needs at least 2 images per set, got {len(f1)} and {len(f2)}")
    rng = np.random.RandomState(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = f2[rng.choice(len(f2), m, replace=False)]
        y = f1[rng.choice(len(f1), m, replace=False)]
        within = (x @ x.T / dim + 1) ** 3 + (y @ y.T / dim + 1) ** 3
        across = (x @ y.T / dim + 1) ** 3
        total += (within.sum() - np.diag(within).sum()) / (m - 1) - across.sum() * 2 / m
    return float(total / num_subsets / m)


def torchmetrics_fid(extractor: nn.Module, reference: Statistics | None = None):  # -> FrechetInceptionDistance
    """torchmetrics' streaming FID with ``extractor`` as its feature module.

    Feed ``update(uint8 images (N, C, H, W), real=...)``; a known reference is loaded into the real
    states exactly: sum = n mu, cov_sum = (n - 1) sigma + n mu mu^T.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=extractor, reset_real_features=False)
    if reference is not None:
        n = max(int(reference.num_images), 2)
        mu = torch.as_tensor(reference.mu, dtype=torch.float64)
        sigma = torch.as_tensor(reference.sigma, dtype=torch.float64)
        metric.real_features_sum = n * mu
        metric.real_features_cov_sum = (n - 1) * sigma + n * torch.outer(mu, mu)
        metric.real_features_num_samples = torch.tensor(n)
    device = next(iter(extractor.parameters()), torch.empty(0)).device
    return metric.to(device)
