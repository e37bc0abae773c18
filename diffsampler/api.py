"""The Python API: the functions behind the commands, for use from Python.

``diffsampler sample`` and ``diffsampler benchmark`` run the same functions (``diffsampler.sample_run.draw`` and
``diffsampler.bench.runner.run_benchmark``), so a call here with the settings of a command gives the command's
numbers bit for bit. Models are EDM denoisers D(x, sigma) -> x0 (arXiv 2206.00364); solvers integrate the
probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma. Heavy modules are imported inside the functions, so
``import diffsampler`` stays light.

Example:
    >>> import diffsampler as ds
    >>> model = ds.load_model("gmm-2d")
    >>> result = ds.sample(model, solver="ipndm", nfe=5, num_samples=4)
    >>> tuple(result.samples.shape), result.nfe
    ((4, 2), 5)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:
    import torch

    from diffsampler.bench.runner import BenchmarkOutcome
    from diffsampler.models.base import Denoiser
    from diffsampler.solvers.base import StepCallback
NOT_SAMPLE_KEYS = ("model", "out", "name")
"""SampleConfig keys that ``sample`` does not take: the model is its first argument and nothing is written."""


@dataclass(frozen=True)
class SampleResult:
    """What ``sample`` drew: ``samples`` (N, *sample_shape) float32 on the CPU (images for a latent model, whose
    ``latents`` are kept too), the descending float64 sigma grid used, the NFE it cost and the schedule's name."""

    samples: torch.Tensor
    sigmas: torch.Tensor
    nfe: int
    schedule: str
    latents: torch.Tensor | None = None


def load_model(name: str, *, trust_pickle: bool = False, **options: Any) -> Denoiser:
    """A model by name, as ``--model`` takes it: a registered name (``diffsampler list``), ``python:FILE.py:NAME``
    or ``python:package.module:NAME`` (your own network; ``options`` go to NAME), ``diffusers:PATH``, ``edm:PATH``
    (a pickle, only with ``trust_pickle=True``: it runs code from the file) or an own checkpoint file.

    Example:
        >>> import diffsampler as ds
        >>> ds.load_model("gmm-2d").sample_shape
        (2,)
    """
    from diffsampler.models import load_model as load

    return load(name, trust_pickle, options)


def _sample_config(solver: str, values: Mapping[str, Any]) -> Any:
    from diffsampler.config import SampleConfig, build_config
    from diffsampler.errors import UserError

    refused = [key for key in NOT_SAMPLE_KEYS if key in values]
    if refused:
        raise UserError(f"diffsampler.sample takes no '{refused[0]}' (it writes nothing and takes a loaded model)")
    given = {key: value for key, value in values.items() if value is not None}
    return build_config(SampleConfig, {"solver": solver, **given}, "diffsampler.sample")


def _checked_noise(noise: Any, shape: tuple[int, ...]) -> torch.Tensor:
    import torch

    from diffsampler.errors import UserError

    z = torch.as_tensor(noise).detach().cpu()
    if z.ndim != len(shape) + 1 or tuple(z.shape[1:]) != shape:
        raise UserError(f"noise must have shape (N, {', '.join(map(str, shape))}), got {tuple(z.shape)}")
    if not z.is_floating_point() or not torch.isfinite(z).all():
        raise UserError("noise must be finite floating-point standard-normal latents")
    return z.to(torch.float64)


def sample(
    model: Denoiser | str,
    *,
    solver: str,
    nfe: int | None = None,
    schedule: str | None = None,
    num_samples: int | None = None,
    seed: int | None = None,
    noise: Any = None,
    options: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    **config_keys: Any,
) -> SampleResult:
    """Samples of ``model`` with ``solver`` at an NFE budget, exactly as ``diffsampler sample`` draws them.

    Unset arguments take ``diffsampler sample``'s defaults (num_samples 64, seed 0, the solver's schedule); the
    latents are seeded per sample index, or ``noise`` (N, *sample_shape) gives your own standard-normal latents
    (scaled by sigma_max here; num_samples defaults to N). ``options`` are the solver's options
    (``diffsampler list``); ``callback`` is called once per step of every batch with k-diffusion's callback
    contents {"x", "i", "sigma", "sigma_hat", "denoised"} (x at the step's start, D(x, sigma) there);
    ``config_keys`` are other keys of the command's config (batch_size, device, dtype,
    precision, sigma_min, sigma_max, rho, sigmas, model_options for a model given by name).

    Example:
        >>> import diffsampler as ds
        >>> steps = []
        >>> result = ds.sample("gmm-2d", solver="euler", nfe=3, num_samples=2, callback=lambda d: steps.append(d["i"]))
        >>> steps, result.sigmas.shape
        ([0, 1, 2], torch.Size([4]))
    """
    from diffsampler.models.base import Denoiser
    from diffsampler.run_setup import setup_model
    from diffsampler.sample_run import draw

    values = {"nfe": nfe, "schedule": schedule, "num_samples": num_samples, "seed": seed, "options": options}
    cfg = _sample_config(solver, {**values, **config_keys})
    if isinstance(model, Denoiser):
        denoiser = model
    else:
        denoiser = load_model(model, trust_pickle=cfg.trust_pickle, **cfg.model_options)
    z = None if noise is None else _checked_noise(noise, tuple(denoiser.sample_shape))
    if z is not None and num_samples is None:
        cfg = _sample_config(solver, {**values, **config_keys, "num_samples": z.shape[0]})
    if z is not None and z.shape[0] < cfg.num_samples:
        from diffsampler.errors import UserError

        raise UserError(f"noise holds {z.shape[0]} latents for num_samples={cfg.num_samples}")
    setup = setup_model(denoiser, cfg.run.device, (cfg.sigma_min, cfg.sigma_max), cfg.run.precision)
    drawn = draw(cfg, setup, noise=z, callback=callback)
    return SampleResult(drawn.samples, drawn.plan.sigmas, drawn.plan.nfe, drawn.plan.schedule, drawn.latents)


def solve(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    sigmas: Sequence[float] | torch.Tensor,
    solver: str,
    options: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """The low level: ``solver`` from ``x`` at sigmas[0] (already scaled: x = x0 + sigmas[0] * noise) down the
    descending grid ``sigmas`` (ending at sigma_min or 0), under ``torch.no_grad``. A flow model's grid may start at
    sigmas[0] = inf (t = 1); x is then the noise itself (the state divided by sigma).

    ``model`` is a Denoiser or any callable D(x, sigma, cond) returning x0; solvers that need an artefact
    (AMED's predictor, DPM-Solver-v3's statistics) need a Denoiser, against which the artefact is checked.

    Example:
        >>> import torch, diffsampler as ds
        >>> grid = ds.sigmas("polynomial", 5)
        >>> x = torch.randn(3, 2, dtype=torch.float64) * grid[0]
        >>> ds.solve(ds.load_model("gmm-2d"), x, grid, "ipndm").shape
        torch.Size([3, 2])
    """
    import math

    import torch

    from diffsampler.errors import UserError
    from diffsampler.models.base import Denoiser
    from diffsampler.sampling import GridPlan, prepared_options
    from diffsampler.schedules import validate_sigmas
    from diffsampler.solvers import get_solver

    spec = get_solver(solver)
    opts = spec.resolve_options(options)
    grid = validate_sigmas([float(s) for s in sigmas], infinite_start=True)  # solvers without a limit refuse inf
    if math.isinf(float(grid[0])) and isinstance(model, Denoiser) and model.flow_grid is None:
        raise UserError(f"a grid from sigma = inf (t = 1) needs a flow-matching model, not {type(model).__name__}")
    if spec.requires and not isinstance(model, Denoiser):
        raise UserError(f"{solver} checks its artefacts against the model: pass a diffsampler Denoiser (load_model)")
    if isinstance(model, Denoiser):
        plan = GridPlan(grid, "explicit", spec.nfe(grid.numel() - 1, opts, final_zero=float(grid[-1]) == 0.0))
        opts = prepared_options(spec, opts, model, plan)
    with torch.no_grad():
        return spec.sample(model, x, grid, opts, callback=callback)


def sigmas(
    schedule: str,
    steps: int,
    *,
    model: Denoiser | None = None,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    rho: float | None = None,
) -> torch.Tensor:
    """The descending float64 grid of a named schedule (polynomial, logsnr, time_uniform, time_quadratic,
    discrete; flow for a flow model, from sigma = inf) with ``steps`` steps (steps + 1 points) from sigma_max to
    sigma_min: those given, else the model's, else EDM's 80 and 0.002. ``sample`` finds the steps for an NFE budget
    itself.

    Example:
        >>> import diffsampler as ds
        >>> [round(float(s), 3) for s in ds.sigmas("logsnr", 2, sigma_min=0.01, sigma_max=1.0)]
        [1.0, 0.1, 0.01]
    """
    from diffsampler.models.base import Denoiser
    from diffsampler.schedules import get_sigmas

    source = model if model is not None else Denoiser
    lo = source.sigma_min if sigma_min is None else sigma_min
    hi = source.sigma_max if sigma_max is None else sigma_max
    discrete = None if model is None else model.discrete_sigmas
    return get_sigmas(schedule, steps, lo, hi, rho, discrete, None if model is None else model.flow_grid)


def benchmark(
    model: str,
    *,
    solvers: Sequence[str] | None = None,
    nfe: Sequence[int] | None = None,
    metrics: Sequence[str] | None = None,
    num_samples: int | None = None,
    fresh: bool = False,
    progress: Callable[..., None] | None = None,
    **config_keys: Any,
) -> BenchmarkOutcome:
    """``diffsampler benchmark``: every (solver, NFE) cell scored by every metric, records and reports written
    under ``out/name`` (defaults results/<model>), a rerun resuming. Returns the outcome; its ``report.tables``
    are the tables the command prints (``diffsampler.bench.report.markdown(outcome.report)`` as Markdown).

    ``model`` is a name as ``--model`` takes it (your own network: ``python:FILE.py:NAME``); ``solvers`` are
    registered solver names (None: every training-free solver); ``config_keys`` are other keys of the command's
    config (seed, batch_size, device, out, name, model_options, metric_options, ...).

    Example:
        >>> import diffsampler as ds
        >>> outcome = ds.benchmark("gmm-2d", solvers=["euler"], nfe=[3], metrics=["rmse"], num_samples=8,
        ...                        out="/tmp/doctest-results")  # doctest: +SKIP
        >>> first_row = outcome.report.tables[0].rows[0]  # doctest: +SKIP
        >>> first_row[0]  # doctest: +SKIP
        'euler'
    """
    from diffsampler.bench.config import benchmark_config
    from diffsampler.bench.runner import run_benchmark

    values = {
        "model": model,
        "nfe": None if nfe is None else list(nfe),
        "metrics": None if metrics is None else list(metrics),
        "num_samples": num_samples,
        **config_keys,
    }
    cfg = benchmark_config(None, values, None if solvers is None else list(solvers))
    return run_benchmark(cfg, fresh, progress)


__all__ = ["SampleResult", "benchmark", "load_model", "sample", "sigmas", "solve"]
