"""The feature networks of `fid` and `ref-stats`: Inception-v3 (FID proper) or the Fashion-MNIST classifier."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from diffsampler.errors import UserError, unknown_choice
from diffsampler.metrics.ref_stats import FeatureNetwork


def _inception(path: str | Path | None, precision: str) -> FeatureNetwork:
    from diffsampler.metrics.inception import locate_inception

    return locate_inception(path).at_precision(precision)


def _fmnist(path: str | Path | None, precision: str) -> FeatureNetwork:
    from diffsampler.metrics.fmnist_net import locate_fmnist

    if precision != "float32":
        raise UserError(f"--precision {precision} is for the inception network; fmnist runs in float32 (it is fast)")
    return locate_fmnist(path)


FEATURE_NETWORKS: dict[str, Callable[[str | Path | None, str], FeatureNetwork]] = {
    "inception": _inception,
    "fmnist": _fmnist,
}


def feature_network(name: str, path: str | Path | None = None, precision: str = "float32") -> FeatureNetwork:
    """The located feature network ``name`` (its weights from ``path`` when given), run in ``precision``."""
    if name not in FEATURE_NETWORKS:
        raise unknown_choice("feature network", name, FEATURE_NETWORKS)
    return FEATURE_NETWORKS[name](path, precision)
