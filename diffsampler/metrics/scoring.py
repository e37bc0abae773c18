"""What `diffsampler fid` runs: FID (and KID) of samples against a dataset or a statistics file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from diffsampler.data.datasets import load_images
from diffsampler.distributed import World
from diffsampler.errors import UserError, unknown_choice
from diffsampler.metrics.fid import (
    Progress,
    Statistics,
    feature_statistics,
    fid_from_statistics,
    image_batches,
    kernel_inception_distance,
    torchmetrics_fid,
)
from diffsampler.metrics.ref_stats import (
    PROTOCOL,
    FeatureNetwork,
    is_statistics_file,
    load_statistics,
    reference_statistics,
)

BACKENDS = ("clean", "torchmetrics")


def default_batch_size(device: torch.device) -> int:
    """Images per Inception call: 256 on a GPU, 32 on the CPU."""
    return 256 if device.type == "cuda" else 32


def resolve_batch_size(batch_size: int | None, device: torch.device) -> int:
    """``batch_size`` (at least 1), or the device's default when None."""
    if batch_size is None:
        return default_batch_size(device)
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    return batch_size


@dataclass(frozen=True)
class FIDReport:
    """One FID evaluation: the scores, the set sizes and where the reference statistics came from."""

    fid: float
    kid: float | None
    num_samples: int
    num_reference: int
    reference: str
    backend: str


def _reference(
    ref: str,
    network: FeatureNetwork,
    kid: bool,
    batch_size: int,
    device: torch.device,
    cache_dir: str | Path | None,
    progress: Progress,
    world: World,
) -> tuple[Statistics, str]:
    if is_statistics_file(ref):
        stats = load_statistics(ref, getattr(network, "protocol", PROTOCOL))
        if kid and stats.features is None:
            raise UserError(f"--kid needs reference features, which {ref} lacks: give the dataset itself as --ref")
        return stats, str(ref)
    result = reference_statistics(
        ref, network, cache_dir, batch_size, device, keep_features=kid, progress=progress, world=world
    )
    return result.stats, str(result.path)


def score_samples(
    samples: str | Path,
    ref: str,
    network: FeatureNetwork,
    device: torch.device,
    kid: bool = False,
    batch_size: int | None = None,
    backend: str = "clean",
    cache_dir: str | Path | None = None,
    progress: Progress = None,
    world: World | None = None,
) -> FIDReport:
    """FID of the images of ``samples`` (folder, zip, .npz) against ``ref`` (a dataset source or a mu/sigma .npz).

    Under torchrun the Inception batches are dealt across ranks and the moments merged (see ``batch_statistics``).
    """
    world = world or World()
    if backend not in BACKENDS:
        raise unknown_choice("FID backend", backend, BACKENDS)
    if backend != "clean" and world.size > 1:
        raise UserError("under torchrun use --backend clean (its moments are merged across ranks)")
    if kid and backend != "clean":
        raise UserError("--kid needs the features themselves: use it with --backend clean")
    batch_size = resolve_batch_size(batch_size, device)
    images = load_images(samples)
    if len(images) < 2:
        raise UserError(f"{samples} holds {len(images)} image(s); FID needs at least 2")
    check_images = getattr(network, "check_images", None)
    if check_images is not None:  # a network for one kind of image refuses others before any work
        check_images(images)
    reference, ref_name = _reference(ref, network, kid, batch_size, device, cache_dir, progress, world)
    size = (int(images.shape[1]), int(images.shape[2]))
    if reference.image_size is not None and tuple(reference.image_size) != size:
        raise UserError(
            f"samples are {size[0]}x{size[1]} but the reference images are "
            f"{reference.image_size[0]}x{reference.image_size[1]}; "
            "compare images of the same size"
        )
    extractor = network.load(device)
    if backend == "torchmetrics":
        metric = torchmetrics_fid(extractor, reference)
        for batch in image_batches(images, batch_size):
            metric.update(batch, real=False)
            if progress is not None:
                progress(len(batch))
        return FIDReport(float(metric.compute()), None, len(images), reference.num_images, ref_name, backend)
    stats = feature_statistics(extractor, images, batch_size, keep_features=kid, progress=progress, world=world)
    kid_value = kernel_inception_distance(stats.features, reference.features) if kid else None
    return FIDReport(
        fid_from_statistics(stats, reference), kid_value, len(images), reference.num_images, ref_name, backend
    )
