"""The `diffsampler` command line: one small function per command, parsing only."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from diffsampler.errors import Interrupted, UserError

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
"""Idle OpenMP threads sleep instead of spinning (torch reads this when it loads, inside the commands): on a
busy CPU, spinning threads made each network call about 10x slower here. A value set by the user wins."""

app = typer.Typer(
    help="Benchmark fast ODE samplers of diffusion models (EDM denoiser form; NFE is the unit of cost).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn a UserError into one red line on stderr and exit code 2 (a traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        completed = False
        try:
            result = fn(*args, **kwargs)
            completed = True
            return result
        except UserError as exc:
            if _state["debug"]:
                raise
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as exc:
            if _state["debug"]:
                raise
            where = str(exc) if isinstance(exc, Interrupted) else "nothing half-written was left"
            err_console.print(f"[bold yellow]interrupted:[/] {where}", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
        finally:
            _leave_process_group(completed)

    return wrapper  # type: ignore[return-value]


def _launch_rank() -> int:
    """This process's torchrun rank (0 without torchrun); ranks other than 0 stay quiet."""
    from diffsampler.distributed import launch_rank

    return launch_rank()


def _leave_process_group(completed: bool) -> None:
    """Leave the torch.distributed group a command under torchrun joined (nothing otherwise)."""
    if "torch.distributed" in sys.modules:
        from diffsampler.distributed import teardown

        teardown(completed)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", metavar="", help="Show full tracebacks and debug logs."),
) -> None:
    _state["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _float_list(text: Optional[str]) -> Optional[list[float]]:
    if text is None:
        return None
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError as exc:
        raise UserError(f"--sigmas must be comma-separated numbers, got '{text}'") from exc


@app.command()
@user_errors
def sample(
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="YAML config (configs/sample/*.yaml); options below override it."
    ),
    model: Optional[str] = typer.Option(
        None, help="Model name or diffusers:PATH / edm-pkl:PATH (see `diffsampler list`). Default gmm-fmnist."
    ),
    model_option: Optional[List[str]] = typer.Option(
        None,
        "--model-option",
        help="External model option key=value, repeatable (e.g. guidance=7.5, prompt=..., class_label=3).",
    ),
    trust_pickle: bool = typer.Option(
        False, "--trust-pickle", metavar="", help="Allow loading a pickle (EDM .pkl): it runs code stored in the file."
    ),
    solver: Optional[str] = typer.Option(None, help="Solver name (see `diffsampler list`). Default dpm2."),
    nfe: Optional[int] = typer.Option(None, help="Network evaluations per sample. Default 10."),
    schedule: Optional[str] = typer.Option(
        None, help="Sigma schedule name, or a schedule file PATH.json (search-schedule); default: the solver's own."
    ),
    rho: Optional[float] = typer.Option(None, help="Schedule exponent (polynomial: 7, time_uniform: 1 or 2)."),
    sigma_min: Optional[float] = typer.Option(None, help="Smallest sigma of the grid; default: the model's."),
    sigma_max: Optional[float] = typer.Option(None, help="Largest sigma of the grid; default: the model's."),
    sigmas: Optional[str] = typer.Option(
        None, help="Explicit grid, comma-separated and descending (replaces schedule)."
    ),
    option: Optional[List[str]] = typer.Option(
        None, "--option", "-o", help="Solver option key=value, repeatable (e.g. -o afs=true)."
    ),
    num_samples: Optional[int] = typer.Option(None, help="Number of samples. Default 64."),
    batch_size: Optional[int] = typer.Option(None, help="Samples per network call. Default 256."),
    seed: Optional[int] = typer.Option(None, help="Seed; sample i uses a generator seeded by (seed, i). Default 0."),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda. Default auto."),
    dtype: Optional[str] = typer.Option(None, help="float32 or float64 for the state x. Default float32."),
    out: Optional[str] = typer.Option(None, help="Parent folder of the output. Default results/samples."),
    name: Optional[str] = typer.Option(None, help="Output folder name. Default <model>-<solver>-nfe<N>."),
) -> None:
    """Draw samples with one solver at one NFE budget; write samples.npz, meta.json and a PNG."""
    from diffsampler.config import SampleConfig, load_config, parse_assignments
    from diffsampler.sampling import run_sample

    overrides = dict(
        model=model,
        trust_pickle=trust_pickle or None,
        solver=solver,
        nfe=nfe,
        schedule=schedule,
        rho=rho,
        sigma_min=sigma_min,
        sigma_max=sigma_max,
        sigmas=_float_list(sigmas),
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
        device=device,
        dtype=dtype,
        out=out,
        name=name,
    )
    cfg = load_config(SampleConfig, config, overrides)
    cfg.options = {**cfg.options, **parse_assignments(option)}
    cfg.model_options = {**cfg.model_options, **parse_assignments(model_option)}
    result = run_sample(cfg)
    if not result.reporter:
        return
    console.print(
        f"{result.num_samples} samples of {cfg.model} with {cfg.solver}: NFE {result.nfe} "
        f"({result.steps} steps, {result.schedule}) in {result.seconds:.2f} s -> {result.folder}",
        highlight=False,
    )


@app.command("train-amed")
@user_errors
def train_amed(
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="YAML config (configs/amed/*.yaml); options below override it."
    ),
    model: Optional[str] = typer.Option(None, help="Model name. Default gmm-fmnist."),
    student: Optional[str] = typer.Option(
        None, help="amed (AMED-Solver) or a base for AMED-Plugin: euler, dpm2, ipndm, dpmpp. Default amed."
    ),
    nfe: Optional[int] = typer.Option(None, help="NFE the predictor is trained for (odd budgets need AFS). Default 5."),
    afs: Optional[bool] = typer.Option(None, "--afs/--no-afs", metavar="", help="Analytical first step. Default on."),
    schedule: Optional[str] = typer.Option(None, help="Sigma schedule; default logsnr for dpmpp, else polynomial."),
    rho: Optional[float] = typer.Option(None, help="Schedule exponent (polynomial: 7)."),
    sigma_min: Optional[float] = typer.Option(None, help="Smallest sigma of the grid; default: the model's."),
    sigma_max: Optional[float] = typer.Option(None, help="Largest sigma of the grid; default: the model's."),
    scale_dir: Optional[float] = typer.Option(
        None, help="Direction scale c in [1 - k, 1 + k]; 0 fixes c = 1. Default 0."
    ),
    scale_time: Optional[float] = typer.Option(None, help="Time scale a in [1 - k, 1 + k]; 0 fixes a = 1. Default 0."),
    max_order: Optional[int] = typer.Option(None, help="Multistep order of ipndm (default 4) or dpmpp (default 3)."),
    teacher: Optional[str] = typer.Option(None, help="Teacher solver: heun, dpm2 or euler. Default heun."),
    teacher_m: Optional[int] = typer.Option(None, help="Extra teacher points per student interval (M). Default 3."),
    num_latents: Optional[int] = typer.Option(None, help="Training trajectories per epoch. Default 10000."),
    batch_size: Optional[int] = typer.Option(None, help="Trajectories per optimizer batch. Default 128."),
    lr: Optional[float] = typer.Option(None, help="Adam learning rate. Default 5e-3."),
    epochs: Optional[int] = typer.Option(None, help="Passes over the latents. Default 1."),
    seed: Optional[int] = typer.Option(None, help="Seed of the latents and the predictor's initialisation. Default 0."),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda. Default auto."),
    dtype: Optional[str] = typer.Option(None, help="float32 or float64 for the state x. Default float32."),
    out: Optional[str] = typer.Option(None, help="Folder of the checkpoint. Default results/amed."),
    name: Optional[str] = typer.Option(None, help="Checkpoint name (without .pt)."),
) -> None:
    """Distil an AMED predictor (arXiv 2312.00094) for one model, solver, NFE and schedule."""
    from diffsampler.amed.config import AmedTrainConfig
    from diffsampler.amed.train import train_and_save
    from diffsampler.config import load_config
    from diffsampler.progress import ProgressEvent
    from diffsampler.terminal import progress_bar

    overrides = dict(
        model=model,
        student=student,
        nfe=nfe,
        afs=afs,
        schedule=schedule,
        rho=rho,
        sigma_min=sigma_min,
        sigma_max=sigma_max,
        scale_dir=scale_dir,
        scale_time=scale_time,
        max_order=max_order,
        teacher=teacher,
        teacher_m=teacher_m,
        num_latents=num_latents,
        batch_size=batch_size,
        lr=lr,
        epochs=epochs,
        seed=seed,
        device=device,
        dtype=dtype,
        out=out,
        name=name,
    )
    cfg = load_config(AmedTrainConfig, config, overrides)
    with progress_bar("AMED", console, enabled=_launch_rank() == 0) as bar:
        path, result = train_and_save(cfg, lambda rep: bar(ProgressEvent(rep.step, rep.total, rep.describe())))
    if _launch_rank() != 0:
        return
    meta = result.meta
    console.print(
        f"{meta['num_parameters']:,}-parameter predictor for {meta['solver']}"
        f"{' base=' + meta['base'] if meta['base'] else ''} "
        f"on {cfg.model}, NFE {meta['nfe']} ({meta['schedule']}), final loss {meta['final_loss']:.4g}, "
        f"trained in {meta['training_seconds']:.1f} s -> {path}",
        highlight=False,
    )


@app.command("train-model")
@user_errors
def train_model(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML training config (configs/train/*.yaml)."),
    resume: bool = typer.Option(
        False, "--resume", metavar="", help="Continue the run <out>/<name> from its train-state.pt."
    ),
    overrides: Optional[List[str]] = typer.Argument(
        None, metavar="KEY=VALUE", help="Config overrides key=value (e.g. steps=2000 patch_size=2)."
    ),
) -> None:
    """Train an EDM U-Net denoiser (optionally PDM-patched); write checkpoints, sample grids and a loss log."""
    from diffsampler.config import load_config, parse_assignments
    from diffsampler.terminal import progress_bar
    from diffsampler.train import TrainConfig, train

    cfg = load_config(TrainConfig, config, parse_assignments(overrides))
    with progress_bar("train", console) as bar:
        result = train(cfg, resume=resume, progress=bar)
    loss = "-" if result.last_loss is None else f"{result.last_loss:.4f}"
    stop = " (time limit reached)" if result.stopped_early else ""
    console.print(
        f"trained {cfg.name} to step {result.step} ({result.images_seen} images, {result.seconds:.1f} s){stop}, "
        f"last loss {loss} -> {result.folder / 'model.pt'}",
        highlight=False,
    )


@app.command()
@user_errors
def benchmark(
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="YAML config (configs/benchmark/*.yaml); options below override it."
    ),
    nfe: Optional[str] = typer.Option(None, help="NFE budgets: 3,5,7,9 or 3-10 (or a mix, 3-5,8). Default 3,5,7,9."),
    solvers: Optional[str] = typer.Option(
        None,
        help="Comma-separated labels of the config's solvers or registered solver names. "
        "Default: every training-free solver.",
    ),
    model: Optional[str] = typer.Option(None, help="Model name (see `diffsampler list`). Default gmm-fmnist."),
    metrics: Optional[str] = typer.Option(
        None, help="Comma-separated metrics (rmse, max_error, pixel_fd, ...). Default: those the model supports."
    ),
    num_samples: Optional[int] = typer.Option(
        None, help="Samples per cell (latents seeded per index: more samples extend, never change). Default 256."
    ),
    batch_size: Optional[int] = typer.Option(None, help="Samples per network call. Default 256."),
    seed: Optional[int] = typer.Option(None, help="Seed of the latents (sample i uses (seed, i)). Default 0."),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda. Default auto."),
    auto_afs: Optional[bool] = typer.Option(
        None,
        "--auto-afs/--no-auto-afs",
        metavar="",
        help="Let 2-NFE-per-step solvers meet odd budgets with AFS. Default on.",
    ),
    name: Optional[str] = typer.Option(
        None, help="Run name: results go to OUT/NAME (a rerun resumes). Default: the model name."
    ),
    out: Optional[str] = typer.Option(None, help="Parent folder of runs. Default results."),
    fresh: bool = typer.Option(False, "--fresh", metavar="", help="Delete the run's earlier records and start over."),
) -> None:
    """Compare solvers across NFE budgets on the same latents; resumable; writes tables, plots and sample grids."""
    from diffsampler.bench.config import benchmark_config, parse_nfe
    from diffsampler.bench.runner import run_benchmark
    from diffsampler.terminal import progress_bar, rich_tables

    def names(text: Optional[str]) -> Optional[list[str]]:
        return None if text is None else [v.strip() for v in text.split(",") if v.strip()]

    overrides = dict(
        nfe=None if nfe is None else parse_nfe(nfe),
        model=model,
        metrics=names(metrics),
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
        device=device,
        auto_afs=auto_afs,
        name=name,
        out=out,
    )
    cfg = benchmark_config(config, overrides, names(solvers))
    with progress_bar("benchmark", err_console, enabled=_launch_rank() == 0) as bar:
        outcome = run_benchmark(cfg, fresh, bar)
    if not outcome.reporter:
        return
    for table in rich_tables(outcome.report):
        console.print(table)
    report = outcome.report
    if report.any_auto_afs:
        from diffsampler.bench.plan import AUTO_AFS_NOTE

        console.print(f"† {AUTO_AFS_NOTE}", highlight=False)
    for i, reason in enumerate(report.footnotes, 1):
        console.print(f"[{i}] {reason}", highlight=False, markup=False)
    console.print(
        f"{outcome.sampled} cells sampled, {outcome.reused} reused, in {outcome.seconds:.1f} s "
        f"-> {outcome.folder}/table.md",
        highlight=False,
    )


@app.command("search-schedule")
@user_errors
def search_schedule(
    method: str = typer.Option(
        "gits", help="gits (arXiv 2405.11326, dynamic programming) or ld3 (arXiv 2405.15506, learned by Adam)."
    ),
    model: str = typer.Option("gmm-fmnist", help="Model name or checkpoint path (see `diffsampler list`)."),
    solver: str = typer.Option("ipndm", help="Solver the schedule is made for."),
    option: Optional[List[str]] = typer.Option(None, "--option", "-o", help="Solver option key=value, repeatable."),
    nfe: int = typer.Option(5, help="NFE budget of the schedule."),
    num_samples: Optional[int] = typer.Option(None, help="Teacher samples. Default 256 (gits), 100 (ld3)."),
    seed: int = typer.Option(
        1, help="Seed of the teacher latents (the benchmark's default seed is 0, so they differ)."
    ),
    teacher_steps: Optional[int] = typer.Option(
        None, help="iPNDM teacher steps. Default 10 x steps (gits: the candidate grid), 60 (ld3)."
    ),
    metric: str = typer.Option("dev", help="GITS step cost: dev (the paper's trajectory deviation) or l2."),
    coeff: float = typer.Option(1.15, help="GITS weight growth per step in the dynamic program (the paper's 1.15)."),
    init: Optional[str] = typer.Option(
        None, help="LD3 starting grid: a schedule name or file PATH.json (e.g. a GITS grid); default: the solver's own."
    ),
    iterations: int = typer.Option(100, help="LD3 Adam iterations."),
    lr: float = typer.Option(0.05, help="LD3 learning rate of the grid logits."),
    slack: bool = typer.Option(
        True, "--slack/--no-slack", help="LD3's soft objective (student latents in a small ball)."
    ),
    batch_size: int = typer.Option(256, help="Samples per network call of the teacher."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    dtype: str = typer.Option("float64", help="float64 (analytic models) or float32 (networks)."),
    out: Optional[str] = typer.Option(
        None, help="Schedule file to write. Default results/schedules/<model>-<solver>-<method>-nfe<N>.json."
    ),
) -> None:
    """Search a sigma grid for one model, solver and NFE; write it as a schedule file for --schedule PATH.json."""
    from diffsampler.config import build_config, parse_assignments
    from diffsampler.search.run import SearchConfig
    from diffsampler.search.run import search_schedule as run

    values = dict(
        method=method,
        model=model,
        solver=solver,
        options=parse_assignments(option),
        nfe=nfe,
        num_samples=num_samples,
        seed=seed,
        teacher_steps=teacher_steps,
        metric=metric,
        coeff=coeff,
        init=init,
        iterations=iterations,
        lr=lr,
        slack=slack,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        out=out,
    )
    cfg = build_config(SearchConfig, values)
    with err_console.status("searching") as status:
        artefact, path = run(cfg, lambda text: status.update(text))
    grid = ", ".join(f"{s:.4g}" for s in artefact.sigmas)
    console.print(
        f"{cfg.method} schedule for {cfg.solver} at NFE {cfg.nfe} in {artefact.seconds:.1f} s: [{grid}] -> {path}",
        highlight=False,
    )


@app.command("compute-ems")
@user_errors
def compute_ems(
    model: str = typer.Option(
        "gmm-fmnist", show_default=False, help="Model name (see `diffsampler list`). Default gmm-fmnist."
    ),
    data: Optional[str] = typer.Option(
        None, help="Data source (fashion-mnist[:test], image folder, .zip, .npz); default: samples of the model."
    ),
    grid: int = typer.Option(
        120,
        show_default=False,
        help="Grid intervals N: statistics at N + 1 points uniform in lambda = -log(sigma). Default 120.",
    ),
    num_data: int = typer.Option(
        1024, show_default=False, help="Data points K (the same K at every grid point). Default 1024."
    ),
    batch: int = typer.Option(
        256, show_default=False, help="Data points per JVP batch (bounds the memory). Default 256."
    ),
    seed: int = typer.Option(
        0, show_default=False, help="Seed of the data subset, the noise and the probes. Default 0."
    ),
    out: Optional[str] = typer.Option(
        None, help="Output folder. Default results/ems/<model>/<sigma_min>_<sigma_max>_<N>_<K>."
    ),
    device: str = typer.Option("auto", show_default=False, help="auto, cpu or cuda. Default auto."),
) -> None:
    """Estimate DPM-Solver-v3's statistics l, s, b; write l.npz, sb.npz and meta.json (resumable)."""
    from diffsampler.ems.run import compute_ems as run
    from diffsampler.terminal import progress_bar

    with progress_bar("compute-ems", err_console, enabled=_launch_rank() == 0, transient=True) as bar:
        result = run(model, data, grid, num_data, batch, seed, out, device, bar)
    if _launch_rank() != 0:
        return
    console.print(
        f"statistics of {model} on {result.num_intervals + 1} grid points from {result.num_data} data points "
        f"in {result.seconds:.1f} s ({result.resumed_points} points resumed) -> {result.folder}",
        highlight=False,
    )


@app.command("list")
@user_errors
def list_things() -> None:
    """List the registered models, solvers and schedules, one line each."""
    from diffsampler.models import LOADERS, MODELS
    from diffsampler.schedules import SCHEDULES
    from diffsampler.solvers import SOLVERS

    for title, rows in (
        ("models", [(m.name, m.summary) for m in MODELS.values()]),
        ("model loaders", list(LOADERS.items())),
        ("solvers", [(s.name, f"{s.summary}; default schedule {s.default_schedule}") for s in SOLVERS.values()]),
        ("schedules", [(s.name, s.summary) for s in SCHEDULES.values()]),
    ):
        table = Table(title=title, show_header=False, title_justify="left", box=None)
        table.add_column(style="bold cyan")
        table.add_column()
        for row in rows:
            table.add_row(*row)
        console.print(table)


@contextlib.contextmanager
def _image_progress(description: str) -> Iterator[Callable[[int], None]]:
    """A rich progress line counting images (and their rate) while features are computed."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}: {task.completed} images"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(description, total=None)
        yield lambda n: progress.advance(task, n)


FEATURES_HELP = (
    "Feature network: inception (FID proper) or fmnist "
    "(the shipped Fashion-MNIST classifier; 1x32x32 or 1x28x28 images)."
)


@app.command("ref-stats")
@user_errors
def ref_stats(
    data: str = typer.Option(
        ..., "--data", help="Dataset: 'fashion-mnist[:train|:test]', an image folder, a .zip or an .npz."
    ),
    out: Optional[Path] = typer.Option(None, help="Also write the statistics (mu/sigma .npz) to this file."),
    inception: Optional[Path] = typer.Option(None, help="FID Inception weights (TorchScript); default: see README."),
    features: str = typer.Option("inception", show_default=False, help=FEATURES_HELP + " Default inception."),
    batch_size: Optional[int] = typer.Option(
        None, help="Images per network call. Default 256 on a GPU, 32 on the CPU (500 for fmnist)."
    ),
    device: str = typer.Option("auto", show_default=False, help="auto, cpu or cuda. Default auto."),
    cache_dir: Optional[Path] = typer.Option(None, help="Statistics cache. Default ~/.cache/diffsampler/ref-stats."),
) -> None:
    """FID reference statistics (mu, sigma) of a dataset, cached by content; clean-fid's protocol."""
    from diffsampler.device import resolve_device
    from diffsampler.metrics.features import feature_network
    from diffsampler.metrics.ref_stats import reference_statistics
    from diffsampler.metrics.scoring import resolve_batch_size

    dev = resolve_device(device)
    if out is not None:
        from diffsampler.atomic import check_writable_file

        check_writable_file(out)
    weights = feature_network(features, inception if features == "inception" else None)
    size = (
        resolve_batch_size(batch_size, dev)
        if batch_size is not None
        else getattr(weights, "batch_size", None) or resolve_batch_size(None, dev)
    )
    with _image_progress("reference features") as progress:
        result = reference_statistics(data, weights, cache_dir, size, dev, progress=progress)
    if out is not None:
        from diffsampler.atomic import atomic_write_bytes

        atomic_write_bytes(out, result.path.read_bytes())
    console.print(
        f"{result.stats.num_images} images of {data} -> {out or result.path}"
        f" ({'from the cache' if result.cache_hit else 'computed'}; weights: {weights.origin})",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
@user_errors
def fid(
    samples: str = typer.Argument(
        ..., metavar="SAMPLES", help="Samples: a folder or .zip of images, or an .npz (as `diffsampler sample` writes)."
    ),
    ref: str = typer.Option(
        ..., "--ref", help="Reference: a dataset source (as for ref-stats) or a mu/sigma statistics .npz."
    ),
    inception: Optional[Path] = typer.Option(None, help="FID Inception weights (TorchScript); default: see README."),
    kid: bool = typer.Option(
        False, "--kid", metavar="", help="Also report KID (keeps the features of both sets in memory)."
    ),
    backend: str = typer.Option(
        "clean",
        show_default=False,
        help="clean (streamed statistics, clean-fid's formula) or torchmetrics. Default clean.",
    ),
    features: str = typer.Option("inception", show_default=False, help=FEATURES_HELP + " Default inception."),
    batch_size: Optional[int] = typer.Option(
        None, help="Images per network call. Default 256 on a GPU, 32 on the CPU (500 for fmnist)."
    ),
    device: str = typer.Option("auto", show_default=False, help="auto, cpu or cuda. Default auto."),
    cache_dir: Optional[Path] = typer.Option(None, help="Statistics cache. Default ~/.cache/diffsampler/ref-stats."),
) -> None:
    """FID (clean-fid's "clean" protocol) of samples against a dataset or a statistics file."""
    from diffsampler.device import resolve_device
    from diffsampler.distributed import setup
    from diffsampler.metrics.features import feature_network
    from diffsampler.metrics.scoring import score_samples

    world, dev = setup(resolve_device(device))
    weights = feature_network(features, inception if features == "inception" else None)
    batch_size = batch_size if batch_size is not None else getattr(weights, "batch_size", None)
    with _image_progress(f"{features} features") as progress:
        report = score_samples(samples, ref, weights, dev, kid, batch_size, backend, cache_dir, progress, world)
    if not world.is_main:
        return
    kid_text = f"  KID {report.kid:.6f}" if report.kid is not None else ""
    name = "FID" if features == "inception" else f"FD_{features}"
    console.print(
        f"{name} {report.fid:.4f}{kid_text}  ({report.num_samples} samples vs {report.reference}, {report.backend})",
        highlight=False,
        soft_wrap=True,
    )


def main() -> None:
    app(prog_name="diffsampler")
