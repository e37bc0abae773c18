"""The benchmark's metric registry: a name -> function of (samples, context) returning one number.

The measurements themselves (FID, feature networks, reference solutions) are ``diffsampler.metrics``; this module
adapts them to a benchmark cell and registers them.

A metric may have a ``prepare`` hook (run once before the grid, e.g. a reference solution or
reference statistics; it may return a one-line note kept in the records and reports) and an
``unavailable`` check saying why it cannot score a given model.
Plug in another metric with one ``register_metric`` line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from diffsampler.distributed import World
from diffsampler.errors import UserError, shorten, unknown_choice
from diffsampler.metrics.bootstrap import (
    RESAMPLES,
    Score,
    bootstrap_score,
    frechet_score,
    kid_score,
    resample_counts,
    rmse_score,
)
from diffsampler.metrics.fmnist_net import SHIPPED_REFERENCE
from diffsampler.metrics.pixel_frechet import frechet_to_gaussian, symmetric_sqrt
from diffsampler.metrics.prdc import NAMES as PRDC_NAMES
from diffsampler.metrics.prdc import NEAREST_K, knn_radii, prdc_balls
from diffsampler.metrics.reference import ReferenceCache, max_error, rmse
from diffsampler.models import Denoiser
from diffsampler.plugins import load_group


@dataclass
class FeatureReference:
    """A feature network (on the run's device), the reference statistics it is compared with, and the one-line note
    the records keep about both."""

    network: Any
    stats: Any
    note: str


@dataclass
class MetricState:
    """What the metrics prepare once per run and reuse in every cell."""

    reference: ReferenceCache | None = None
    """Reference ODE solutions from the run's latents (rmse, max_error)."""
    moments: tuple[torch.Tensor, torch.Tensor] | None = None
    """The analytic model's exact mean and covariance square root (pixel_fd)."""
    features: dict[str, FeatureReference] = field(default_factory=dict)
    """By metric name (fid, fd_fmnist, kid_fmnist, prdc_fmnist): its feature network and reference."""
    prdc: PRDCReference | None = None
    """prdc_fmnist's fixed subset of real features and their k-NN radii."""
    prdc_scores: tuple[torch.Tensor, dict[str, Score]] | None = None
    """The last cell's samples and their four PRDC scores (its four metrics share one computation)."""


@dataclass
class MetricContext:
    """What a metric may need besides the samples: the model, the latents' seed and count, a cache folder."""

    denoiser: Denoiser
    model: str
    seed: int
    num_samples: int
    sigma_start: float
    sigma_end: float
    device: torch.device
    batch_size: int
    cache_dir: Path | None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    state: MetricState = field(default_factory=MetricState)
    world: World = field(default_factory=World)


MetricFn = Callable[[torch.Tensor, MetricContext], "float | Score"]
"""A metric's value, or a Score: the value with its 95% interval and bootstrap replicates."""


@dataclass(frozen=True)
class Metric:
    """A registered metric; ``version`` is bumped by hand when its definition changes (old records then refused)."""

    name: str
    compute: MetricFn
    summary: str
    prepare: Callable[[MetricContext], str | None] | None = None
    unavailable: Callable[[Denoiser], str | None] | None = None
    lower_is_better: bool = True
    version: int = 1
    options_key: str | None = None
    """The ``metric_options`` key it reads (its group's name for a member of a group such as prdc_fmnist)."""

    @property
    def option_name(self) -> str:
        return self.options_key or self.name


METRICS: dict[str, Metric] = {}
METRIC_GROUPS: dict[str, tuple[str, ...]] = {}
"""A name that stands for several metrics in ``metrics`` (prdc_fmnist: its four parts), one options key for all."""
DEFAULT_METRICS = ("rmse", "max_error", "pixel_fd")
"""The defaults for an analytic model (exact moments; its reference is cheap, so every sample is scored)."""
NETWORK_DEFAULT_METRICS: dict[str, dict[str, Any]] = {"fd_fmnist": {}}
"""The defaults for a trained network, with their options: a feature metric on every sample. rmse is asked for by
name (``--metrics fd_fmnist,rmse`` with ``metric_options.rmse.samples``): its reference costs 192 to 960 NFE a latent
at a small batch, and on 4 latents it was a third of the float32 quick start's time (issue 36)."""


def register_metric(
    name: str,
    compute: MetricFn,
    summary: str,
    prepare: Callable[[MetricContext], str | None] | None = None,
    unavailable: Callable[[Denoiser], str | None] | None = None,
    lower_is_better: bool = True,
    version: int = 1,
    options_key: str | None = None,
) -> Metric:
    """Add a metric to the registry."""
    metric = Metric(name, compute, summary, prepare, unavailable, lower_is_better, version, options_key)
    METRICS[name] = metric
    return metric


def load_plugins() -> None:
    """Add the metrics of installed plugins to ``METRICS``, once per process."""
    load_group("diffsampler.metrics", METRICS)


def get_metric(name: str) -> Metric:
    """The registered metric of this name (plugins loaded first)."""
    load_plugins()
    if name not in METRICS:
        raise unknown_choice("metric", name, [*METRICS, *METRIC_GROUPS])
    return METRICS[name]


def expand_metrics(names: list[str]) -> list[str]:
    """``names`` with each group name replaced by its members, in order, without repeats."""
    return list(dict.fromkeys(member for name in names for member in METRIC_GROUPS.get(name, (name,))))


def _reference_cache(ctx: MetricContext) -> ReferenceCache:
    if ctx.state.reference is None:
        folder = None if ctx.cache_dir is None else ctx.cache_dir / "reference"
        ctx.state.reference = ReferenceCache(
            ctx.denoiser, ctx.seed, ctx.sigma_start, ctx.sigma_end, ctx.device, ctx.batch_size, folder
        )
    return ctx.state.reference


REFERENCE_OPTIONS = {"samples": None}
"""metric_options of ``rmse`` / ``max_error``: score only the first ``samples`` samples of each cell (None: all),
so that a table can score thousands of samples with a feature metric and solve the reference for a few."""


def scored_count(options: dict[str, Any], num_samples: int) -> int:
    """How many samples of a cell (the first ones) a metric with these ``metric_options`` scores: ``samples`` where
    given, at most the cell's ``num_samples``."""
    wanted = options.get("samples")
    return num_samples if wanted is None else min(wanted, num_samples)


def _reference_samples(ctx: MetricContext, name: str) -> int:
    """How many samples (the first ones) ``name`` scores (``scored_count``), its option checked first."""
    options = _metric_options(ctx, name, REFERENCE_OPTIONS)
    wanted = options["samples"]
    if wanted is not None and (not isinstance(wanted, int) or isinstance(wanted, bool) or wanted < 1):
        raise UserError(f"metric_options.{name}.samples must be a positive integer or null, got {wanted!r}")
    return scored_count(options, ctx.num_samples)


def prepare_reference(ctx: MetricContext, name: str) -> str:
    """Solve (or load) the reference ODE solutions of the samples ``name`` scores, once."""
    count = _reference_samples(ctx, name)
    subset = "" if count == ctx.num_samples else f"; {name} scores the first {count} samples of each cell"
    return _reference_cache(ctx).describe(count) + subset


def _reference_pair(samples: torch.Tensor, ctx: MetricContext, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    count = min(_reference_samples(ctx, name), samples.shape[0])
    return samples[:count], _reference_cache(ctx).get(count).solution


def reference_rmse(samples: torch.Tensor, ctx: MetricContext) -> Score:
    """rmse with its interval (mean +- 1.96 se across samples, ``bootstrap.rmse_score``)."""
    x, ref = _reference_pair(samples, ctx, "rmse")
    per_sample = (x.double() - ref.double()).pow(2).flatten(1).mean(dim=1)
    return rmse_score(rmse(x, ref), per_sample.cpu().numpy(), ctx.seed)


def reference_max_error(samples: torch.Tensor, ctx: MetricContext) -> float:
    return max_error(*_reference_pair(samples, ctx, "max_error"))


def _no_moments(denoiser: Denoiser) -> str | None:
    return (
        None
        if callable(getattr(denoiser, "moments", None))
        else "needs an analytic model with known moments (a Gaussian mixture)"
    )


def _moments(ctx: MetricContext) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's exact mean and the square root of its covariance, computed once."""
    if ctx.state.moments is None:
        mean, cov = ctx.denoiser.moments()  # type: ignore[operator]
        ctx.state.moments = (mean.detach().cpu().double(), symmetric_sqrt(cov.detach().cpu()))
    return ctx.state.moments


def prepare_moments(ctx: MetricContext) -> str:
    """The model's exact mean and the square root of its covariance, once."""
    _moments(ctx)
    return "pixel_fd: against the exact mean and covariance of the analytic model"


PIXEL_INTERVAL_DIM = 256
"""pixel_fd gets a bootstrap interval up to this many values per sample (each resample solves a D x D eigenproblem)."""


def pixel_frechet(samples: torch.Tensor, ctx: MetricContext) -> float | Score:
    mean, cov_sqrt = _moments(ctx)
    value = frechet_to_gaussian(samples, mean, cov_sqrt)
    flat = samples.detach().cpu().double().flatten(1).numpy()
    if flat.shape[1] > PIXEL_INTERVAL_DIM or flat.shape[0] < 2:
        return value
    root = cov_sqrt.numpy()
    return frechet_score(value, flat, mean.numpy(), root @ root, ctx.seed)


FID_OPTIONS = {"ref": "fashion-mnist:train", "inception": None, "cache_dir": None, "precision": "float32"}
"""metric_options of ``fid``: the reference (a dataset source or a mu/sigma .npz), the weights file, the statistics
cache, Inception's precision (float32 or bfloat16)."""


def _not_images(denoiser: Denoiser) -> str | None:
    shape = tuple(denoiser.sample_shape)
    return None if len(shape) == 3 and shape[0] in (1, 3) else "needs image samples of shape (1 or 3, H, W)"


def _metric_options(ctx: MetricContext, name: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """``metric_options.<name>`` over the metric's defaults; an unknown key is refused in one line."""
    given = ctx.options.get(name, {})
    for key in given:
        if key not in defaults:
            raise unknown_choice(f"key in metric_options.{name}", str(key), defaults)
    return {**defaults, **given}


def _check_reference_size(ctx: MetricContext, label: str, ref: str, stats: Any, advice: str = "") -> None:
    """Refuse reference statistics of images of another size than the model's samples."""
    size = tuple(ctx.denoiser.sample_shape[1:])
    if stats.image_size is not None and tuple(stats.image_size) != size:
        raise UserError(
            f"the {label} reference {ref} holds {stats.image_size[0]}x{stats.image_size[1]} images "
            f"but the model makes {size[0]}x{size[1]}{advice}"
        )


def prepare_fid(ctx: MetricContext) -> str:
    """Locate the Inception weights and load (or compute and cache) the reference statistics, once."""
    from diffsampler.metrics.inception import locate_inception
    from diffsampler.metrics.ref_stats import is_statistics_file, load_statistics, reference_statistics
    from diffsampler.metrics.scoring import default_batch_size

    opts = _metric_options(ctx, "fid", FID_OPTIONS)
    if "fid" not in ctx.state.features:
        weights = locate_inception(opts["inception"]).at_precision(str(opts["precision"]))
        ref = str(opts["ref"])
        if is_statistics_file(ref):
            stats = load_statistics(ref, weights.protocol)
        else:
            stats = reference_statistics(
                ref, weights, opts["cache_dir"], default_batch_size(ctx.device), ctx.device
            ).stats
        _check_reference_size(ctx, "FID", ref, stats, "; use a reference of the same size")
        note = (
            f"fid: clean-fid protocol ({weights.precision} Inception), weights from {weights.origin}, "
            f"reference {ref} ({stats.num_images} images)"
        )
        ctx.state.features["fid"] = FeatureReference(weights.load(ctx.device), stats, note)
    return ctx.state.features["fid"].note


def frechet_inception_distance(samples: torch.Tensor, ctx: MetricContext) -> float:
    from diffsampler.metrics.fid import batch_statistics, fid_from_statistics, model_range_to_uint8
    from diffsampler.metrics.scoring import default_batch_size

    prepared = ctx.state.features["fid"]
    network, reference = prepared.network, prepared.stats
    size = default_batch_size(ctx.device)
    batches = (model_range_to_uint8(samples[i : i + size]) for i in range(0, samples.shape[0], size))
    return fid_from_statistics(batch_statistics(network, batches, world=ctx.world), reference)


register_metric(
    "rmse",
    reference_rmse,
    "RMSE against the reference ODE solution from the same latents",
    lambda ctx: prepare_reference(ctx, "rmse"),
)
register_metric(
    "max_error",
    reference_max_error,
    "max |x - x_ref| against the reference ODE solution",
    lambda ctx: prepare_reference(ctx, "max_error"),
)
register_metric(
    "pixel_fd",
    pixel_frechet,
    "Frechet distance in pixel space to the model's exact moments",
    prepare_moments,
    _no_moments,
)
register_metric(
    "fid",
    frechet_inception_distance,
    "FID (Inception-v3, clean-fid protocol) against the reference statistics",
    prepare_fid,
    _not_images,
)


FMNIST_OPTIONS = {"ref": SHIPPED_REFERENCE, "weights": None, "cache_dir": None}
"""metric_options of ``fd_fmnist`` / ``kid_fmnist``: the reference (a dataset source or a mu/sigma .npz), a
classifier file, the cache."""


def _not_fmnist_images(denoiser: Denoiser) -> str | None:
    shape = tuple(denoiser.sample_shape)
    return (
        None
        if shape in ((1, 32, 32), (1, 28, 28))
        else f"needs 1x32x32 or 1x28x28 grayscale samples, not {'x'.join(map(str, shape))}"
    )


def _fmnist_reference(
    ctx: MetricContext, name: str, keep_features: bool, defaults: dict[str, Any] = FMNIST_OPTIONS
) -> str:
    """Load the classifier and the reference statistics (with the features for KID and PRDC) into ``ctx.state``,
    once."""
    from diffsampler.metrics.fmnist_net import locate_fmnist
    from diffsampler.metrics.ref_stats import is_statistics_file, load_statistics, reference_statistics

    opts = _metric_options(ctx, name, defaults)
    if name not in ctx.state.features:
        weights, ref = locate_fmnist(opts["weights"]), str(opts["ref"])
        if is_statistics_file(ref):
            stats = load_statistics(ref, weights.protocol)
            if keep_features and stats.features is None:
                raise UserError(f"{name} needs reference features, which {ref} lacks: give the dataset itself as ref")
        else:
            stats = reference_statistics(
                ref, weights, opts["cache_dir"], weights.batch_size, ctx.device, keep_features
            ).stats
        _check_reference_size(ctx, name, ref, stats)
        note = (
            f"{name}: Fashion-MNIST classifier {weights.identity[:12]} ({weights.origin}), "
            f"reference {ref} ({stats.num_images} images)"
        )
        ctx.state.features[name] = FeatureReference(weights.load(ctx.device), stats, note)
    return ctx.state.features[name].note


def _fmnist_features(samples: torch.Tensor, network: Any, world: World | None, keep: bool):
    from diffsampler.metrics.fid import batch_statistics, model_range_to_uint8
    from diffsampler.metrics.fmnist_net import BATCH_SIZE

    batches = (model_range_to_uint8(samples[i : i + BATCH_SIZE]) for i in range(0, samples.shape[0], BATCH_SIZE))
    return batch_statistics(network, batches, keep_features=keep, world=world)


def fmnist_frechet(samples: torch.Tensor, ctx: MetricContext) -> float | Score:
    """Frechet distance (arXiv 1706.08500 eq. 6) in the classifier's 128-d features, with its bootstrap interval;
    under torchrun the moments are merged across ranks and there is no interval (the features stay on their rank)."""
    from diffsampler.metrics.fid import fid_from_statistics

    prepared, alone = ctx.state.features["fd_fmnist"], ctx.world.size == 1
    stats = _fmnist_features(samples, prepared.network, ctx.world, alone)
    value = fid_from_statistics(stats, prepared.stats)
    if stats.features is None:
        return value
    return frechet_score(value, stats.features, prepared.stats.mu, prepared.stats.sigma, ctx.seed)


KID_INTERVAL_REFERENCE = 5000
"""kid_fmnist's interval compares with this many real feature vectors (a fixed subset, permutation seeded 0)."""


def fmnist_kid(samples: torch.Tensor, ctx: MetricContext) -> Score:
    """KID (arXiv 1801.01401) in the classifier's features with its bootstrap interval (``bootstrap.kid_score``);
    every rank holds all samples and scores them alone."""
    from diffsampler.metrics.fid import kernel_inception_distance

    prepared = ctx.state.features["kid_fmnist"]
    features = _fmnist_features(samples, prepared.network, None, True).features
    real = prepared.stats.features
    value = kernel_inception_distance(features, real)
    return kid_score(value, features, _fixed_subset(real, KID_INTERVAL_REFERENCE), ctx.seed)


def _fixed_subset(features: np.ndarray, size: int) -> np.ndarray:
    """``size`` rows of ``features`` (all if fewer) picked by a permutation seeded 0, in their order."""
    order = np.random.default_rng(0).permutation(len(features))[:size]
    return np.asarray(features, np.float64)[np.sort(order)]


register_metric(
    "fd_fmnist",
    fmnist_frechet,
    "Frechet distance in the features of a Fashion-MNIST classifier (fast on the CPU)",
    lambda ctx: _fmnist_reference(ctx, "fd_fmnist", False),
    _not_fmnist_images,
)
register_metric(
    "kid_fmnist",
    fmnist_kid,
    "KID in the features of a Fashion-MNIST classifier (fast on the CPU)",
    lambda ctx: _fmnist_reference(ctx, "kid_fmnist", True),
    _not_fmnist_images,
)


@dataclass(frozen=True)
class PRDCReference:
    """The real features PRDC compares with (a fixed subset of the reference's) and their k-NN radii."""

    real: np.ndarray
    radii: np.ndarray
    k: int


PRDC_OPTIONS = {**FMNIST_OPTIONS, "k": NEAREST_K, "reference_size": None}
"""metric_options of ``prdc_fmnist``: those of fd_fmnist, the k of the k-NN balls (5, as arXiv 2002.09797) and how
many real feature vectors it compares with, a fixed subset of the reference (a permutation seeded 0); None: as many
as the cell's samples, the paper's equal sizes."""
PRDC_PARTS = {name: f"{name}_fmnist" for name in PRDC_NAMES}


def _positive_int(name: str, key: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"metric_options.{name}.{key} must be an integer of at least {minimum}, got {value!r}")
    return value


def prepare_prdc(ctx: MetricContext) -> str:
    """The classifier, the reference features (computed from the dataset once and cached, as for KID), their fixed
    subset and its k-NN radii, once."""
    opts = _metric_options(ctx, "prdc_fmnist", PRDC_OPTIONS)
    k = _positive_int("prdc_fmnist", "k", opts["k"])
    wanted = ctx.num_samples if opts["reference_size"] is None else opts["reference_size"]
    size = _positive_int("prdc_fmnist", "reference_size", wanted, k + 1)
    note = _fmnist_reference(ctx, "prdc_fmnist", True, PRDC_OPTIONS)
    if ctx.state.prdc is None:
        features = ctx.state.features["prdc_fmnist"].stats.features
        assert features is not None
        real = _fixed_subset(features, size)
        ctx.state.prdc = PRDCReference(real, knn_radii(real, k), k)
    return f"{note}; PRDC with k = {ctx.state.prdc.k} against {len(ctx.state.prdc.real)} of its images"


def _prdc_scores(samples: torch.Tensor, ctx: MetricContext) -> dict[str, Score]:
    """The four PRDC scores of one cell's samples with their bootstrap intervals, computed once per cell."""
    cached = ctx.state.prdc_scores
    if cached is not None and cached[0] is samples:
        return cached[1]
    reference, network = ctx.state.prdc, ctx.state.features["prdc_fmnist"].network
    assert reference is not None
    fake = _fmnist_features(samples, network, None, True).features
    balls = prdc_balls(reference.real, fake, reference.k, reference.radii)
    values, replicates = balls.values(), balls.replicates(resample_counts(len(fake), RESAMPLES, ctx.seed))
    scores = {
        name: bootstrap_score(values[name], replicates[name], 0.0, None if name == "density" else 1.0)
        for name in PRDC_NAMES
    }
    ctx.state.prdc_scores = (samples, scores)
    return scores


def _prdc_part(part: str) -> MetricFn:
    return lambda samples, ctx: _prdc_scores(samples, ctx)[part]


for _part, _summary in (
    ("precision", "PRDC precision: share of samples inside the real data's k-NN balls (fidelity)"),
    ("recall", "PRDC recall: share of real images inside the samples' k-NN balls (diversity)"),
    ("density", "PRDC density: real k-NN balls holding a sample, per sample / k (fidelity; 1 for real data)"),
    ("coverage", "PRDC coverage: share of real images whose k-NN ball holds a sample (diversity)"),
):
    register_metric(
        PRDC_PARTS[_part],
        _prdc_part(_part),
        f"{_summary}, in the Fashion-MNIST classifier's features",
        prepare_prdc,
        _not_fmnist_images,
        lower_is_better=False,
        options_key="prdc_fmnist",
    )
METRIC_GROUPS["prdc_fmnist"] = tuple(PRDC_PARTS.values())


OPTION_KEYS: dict[str, dict[str, Any]] = {
    "rmse": REFERENCE_OPTIONS,
    "max_error": REFERENCE_OPTIONS,
    "pixel_fd": {},
    "fid": FID_OPTIONS,
    "fd_fmnist": FMNIST_OPTIONS,
    "kid_fmnist": FMNIST_OPTIONS,
}
"""The ``metric_options`` keys (with their defaults) of built-in metrics, checked before a run starts; other
metrics' options are checked by the metric itself."""


def check_metric_options(options: dict[str, Any], metrics: list[str] | None = None) -> None:
    """Refuse (one line, before any work) ``metric_options`` naming no registered metric's options, one not among
    ``metrics`` (the option names of the run's metrics, where known) or a key that metric lacks."""
    load_plugins()
    names = list(dict.fromkeys(m.option_name for m in METRICS.values()))
    for name, given in options.items():
        if name not in names:
            raise unknown_choice("metric", str(name), names)
        if metrics is not None and name not in metrics:
            raise UserError(f"metric_options names '{name}', which is not among the metrics of this run")
        if not isinstance(given, dict):
            raise UserError(f"metric_options.{name} must be a mapping of option keys to values, got {shorten(given)}")
        known = OPTION_KEYS.get(str(name))
        unknown = [key for key in given if known is not None and key not in known]
        if unknown:
            raise unknown_choice(f"key in metric_options.{name}", str(unknown[0]), known or {})
