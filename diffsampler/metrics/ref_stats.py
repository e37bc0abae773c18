"""FID reference statistics of a dataset, cached under a key of the data's content and the protocol.

Files use the ``mu`` (D,) / ``sigma`` (D, D) float64 .npz layout that EDM and clean-fid read and
write, so users can bring their own; diffsampler adds ``num_images``, ``image_size``, ``protocol``
and ``weights`` (the Inception file's sha1) beside them.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from diffsampler.atomic import atomic_write_bytes, check_writable_file
from diffsampler.data.datasets import load_images
from diffsampler.distributed import World
from diffsampler.errors import UNREADABLE_FILE, UserError
from diffsampler.metrics.fid import Progress, Statistics, feature_statistics

log = logging.getLogger(__name__)

LONG_SECONDS = 300.0
"""A reference pass estimated to take longer than this gets a warning with faster options."""
ESTIMATE_AFTER = (3, 10.0)
"""The estimate is made after this many batches or this many seconds, whichever comes first (at least one batch)."""

PROTOCOL = (
    "clean-fid clean: PIL bicubic float resize to 299x299, clip [0, 255], (x - 128) / 128, Inception-v3 pool 2048"
)
CACHE_ENV = "DIFFSAMPLER_CACHE"


class FeatureNetwork(Protocol):
    """What statistics are computed with: a loadable feature network with a stable identity.

    A network may also carry ``protocol`` (its preprocessing, kept in the files and the cache key;
    clean-fid's Inception protocol when absent).
    """

    @property
    def identity(self) -> str: ...

    def load(self, device: torch.device | str = "cpu") -> nn.Module: ...


def default_cache_dir() -> Path:
    """``$DIFFSAMPLER_CACHE/ref-stats``, else ``$XDG_CACHE_HOME`` or ``~/.cache``, then ``diffsampler/ref-stats``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser() / "ref-stats"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "diffsampler" / "ref-stats"


def content_key(images: np.ndarray, network_identity: str, protocol: str = PROTOCOL) -> str:
    """sha256 of the protocol, the network's identity, the images' shape and their bytes."""
    digest = hashlib.sha256()
    for part in (protocol, network_identity, str(images.dtype), repr(tuple(images.shape))):
        digest.update(part.encode() + b"\0")
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()


def save_statistics(path: str | Path, stats: Statistics, network_identity: str, protocol: str = PROTOCOL) -> None:
    """Write ``mu``, ``sigma`` and diffsampler's metadata atomically to an .npz file."""
    buffer = io.BytesIO()
    extra = {} if stats.image_size is None else {"image_size": np.asarray(stats.image_size, np.int64)}
    np.savez(
        buffer,
        mu=np.asarray(stats.mu, np.float64),
        sigma=np.asarray(stats.sigma, np.float64),
        num_images=np.int64(stats.num_images),
        protocol=np.str_(protocol),
        weights=np.str_(network_identity),
        **extra,
    )
    atomic_write_bytes(path, buffer.getvalue())


def is_statistics_file(path: str | Path) -> bool:
    """True for an .npz holding ``mu`` and ``sigma`` (a statistics file rather than images)."""
    path = Path(path)
    if path.suffix.lower() != ".npz" or not path.is_file():
        return False
    try:
        with np.load(path) as data:
            return {"mu", "sigma"} <= set(data.files)
    except UNREADABLE_FILE:
        return False


def load_statistics(path: str | Path, protocol: str | None = None) -> Statistics:
    """Read a ``mu``/``sigma`` .npz (EDM, clean-fid or diffsampler); ``feats`` (clean-fid KID files) if present.

    With ``protocol``, a file that records another protocol (diffsampler's files do; EDM's and clean-fid's do not)
    is refused: its features would not be comparable with the samples'.
    """
    path = Path(path)
    try:
        with np.load(path) as data:
            if not {"mu", "sigma"} <= set(data.files):
                raise UserError(
                    f"{path} is not a statistics file: it needs arrays 'mu' and 'sigma', has {', '.join(data.files)}"
                )
            mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
            num = int(data["num_images"]) if "num_images" in data.files else 0
            size = tuple(int(v) for v in data["image_size"]) if "image_size" in data.files else None
            feats = data["feats"] if "feats" in data.files else None
            recorded = str(data["protocol"]) if "protocol" in data.files else None
    except UNREADABLE_FILE as exc:
        raise UserError(f"cannot read statistics file {path}: {exc}") from exc
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise UserError(f"{path}: 'mu' must be (D,) and 'sigma' (D, D), got {mu.shape} and {sigma.shape}")
    if protocol is not None and recorded is not None and recorded != protocol:
        raise UserError(
            f"{path} holds statistics made with another feature network or precision than this run's; "
            "compute the reference with the same --features and --precision (diffsampler ref-stats)"
        )
    if protocol is not None and recorded is None and protocol != PROTOCOL:
        log.warning("%s does not record its feature protocol; it is taken to be float32 Inception (clean-fid)", path)
    return Statistics(mu, sigma, num, size, feats)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RefStats:
    """Statistics of a dataset, the cache file holding them, and whether the cache already had them."""

    stats: Statistics
    path: Path
    cache_hit: bool


def reference_statistics(
    source: str | Path,
    network: FeatureNetwork,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    keep_features: bool = False,
    progress: Progress = None,
    world: World | None = None,
) -> RefStats:
    """Statistics of the images of ``source`` (any `load_images` source), read from or written to the cache.

    With ``keep_features`` (for KID) the features are cached too, in ``<key>-feats.npz`` (key ``feats``,
    clean-fid's KID layout) beside the statistics, and a hit needs both files. A network that ships the
    statistics of ``source`` (the Fashion-MNIST classifier, its training set) answers without the dataset.
    """
    shipped = None if keep_features else getattr(network, "shipped_statistics", lambda _: None)(source)
    if shipped is not None:
        return RefStats(load_statistics(shipped, getattr(network, "protocol", PROTOCOL)), shipped, True)
    images = load_images(source)
    if len(images) < 2:
        raise UserError(f"{source} holds {len(images)} image(s); reference statistics need at least 2")
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    protocol = getattr(network, "protocol", PROTOCOL)
    key = content_key(images, network.identity, protocol)[:32]
    path, feats_path = folder / f"{key}.npz", folder / f"{key}-feats.npz"
    if path.is_file() and (not keep_features or feats_path.is_file()):
        cached = _cached(path, feats_path if keep_features else None)
        if cached is not None:
            log.info("reference statistics of %s from the cache %s", source, path)
            return RefStats(cached, path, True)
    check_writable_file(path)
    world = world or World()
    estimate = _TimeEstimate(len(images) // world.size, device, progress, getattr(network, "precision", None))
    stats = feature_statistics(
        network.load(device), images, batch_size, keep_features=keep_features, progress=estimate, world=world
    )
    if world.is_main:
        save_statistics(path, stats, network.identity, protocol)
    if keep_features:
        buffer = io.BytesIO()
        np.savez(buffer, feats=stats.features)
        atomic_write_bytes(feats_path, buffer.getvalue())
    return RefStats(stats, path, False)


class _TimeEstimate:
    """Forwards progress and, once, after the first batches, warns when the whole pass will take long."""

    def __init__(self, total: int, device: torch.device | str, progress: Progress, precision: str | None) -> None:
        self.total, self.device, self.progress = total, str(device), progress
        self.bf16_advice = (
            "--precision bfloat16 is about 2.7x faster on a CPU with AMX, " if precision == "float32" else ""
        )
        self.done, self.batches, self.start, self.estimated = 0, 0, time.perf_counter(), False

    def __call__(self, count: int) -> None:
        if self.progress is not None:
            self.progress(count)
        self.done, self.batches = self.done + count, self.batches + 1
        elapsed = time.perf_counter() - self.start
        if self.estimated or (self.batches < ESTIMATE_AFTER[0] and elapsed < ESTIMATE_AFTER[1]):
            return
        self.estimated = True
        rate = self.done / max(elapsed, 1e-9)
        total_seconds = self.total / rate
        if total_seconds > LONG_SECONDS:
            log.warning(
                "reference statistics of %d images will take about %s at %.0f images/s on %s; a GPU (--device cuda) "
                "takes minutes, %sand for Fashion-MNIST the domain metric fd_fmnist is far faster",
                self.total,
                _duration(total_seconds),
                rate,
                self.device,
                self.bf16_advice,
            )


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _cached(path: Path, feats_path: Path | None) -> Statistics | None:
    """The statistics (and features) of a cache entry, or None (with a warning) when the entry is damaged."""
    try:
        stats = load_statistics(path)
        if feats_path is not None:
            stats.features = load_features(feats_path)
    except UserError as exc:
        log.warning("the cached reference statistics are damaged (%s): computing them again", exc)
        return None
    return stats


def load_features(path: str | Path) -> np.ndarray:
    """The (N, D) ``feats`` array of a features .npz (diffsampler's cache or clean-fid's KID files)."""
    try:
        with np.load(path) as data:
            feats = data["feats"]
    except UNREADABLE_FILE as exc:
        raise UserError(f"cannot read features file {path}: {exc}") from exc
    if feats.ndim != 2:
        raise UserError(f"{path}: 'feats' must be (N, D), got {feats.shape}")
    return feats
