"""The `diffsampler` command line: one small function per command, parsing only."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from diffsampler.cli_config import COMMON_HELP, config_command, config_option, flag, set_option
from diffsampler.errors import MESSAGE_LIMIT, Interrupted, UserError, shorten
from diffsampler.packaged_configs import resolve_config
from diffsampler.plugins import PluginWarning, plugin_package

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
            line = shorten(str(exc), MESSAGE_LIMIT, as_repr=False)
            err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
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


def _main_rank() -> bool:
    """True in the process that draws and prints: torchrun's rank 0, or the only process (the others stay quiet;
    the engines let only ``world.is_main`` write files)."""
    from diffsampler.distributed import launch_rank

    return launch_rank() == 0


def _leave_process_group(completed: bool) -> None:
    """Leave the torch.distributed group a command under torchrun joined (nothing otherwise)."""
    if "torch.distributed" in sys.modules:
        from diffsampler.distributed import teardown

        teardown(completed)


_default_showwarning = warnings.showwarning


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """A broken plugin is one yellow line on stderr; other warnings as Python shows them."""
    if issubclass(category, PluginWarning):
        err_console.print(f"[bold yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
    else:
        _default_showwarning(message, category, *args, **kwargs)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", metavar="", help="Show full tracebacks and debug logs."),
) -> None:
    _state["debug"] = debug
    warnings.showwarning = _show_warning
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command(cls=config_command("diffsampler.config:SampleConfig", {"nfe": "diffsampler.sampling:DEFAULT_NFE"}))
@user_errors
def sample(
    config: Optional[Path] = config_option("configs/sample/*.yaml"),
    sets: Optional[List[str]] = set_option(),
    model: Optional[str] = flag("model"),
    model_option: Optional[List[str]] = typer.Option(
        None,
        "--model-option",
        help="External model option key=value, repeatable (e.g. guidance=7.5, prompt=..., class_label=3).",
    ),
    trust_pickle: bool = typer.Option(
        False, "--trust-pickle", metavar="", help="Allow loading a pickle (EDM .pkl): it runs code stored in the file."
    ),
    solver: Optional[str] = flag("solver"),
    schedule: Optional[str] = flag("schedule"),
    nfe: Optional[int] = flag("nfe"),
    option: Optional[List[str]] = typer.Option(
        None, "--option", "-o", help="Solver option key=value, repeatable (e.g. -o afs=true; = --set options.afs=true)."
    ),
    num_samples: Optional[int] = flag("num_samples"),
    batch_size: Optional[int] = flag("batch_size"),
    seed: Optional[int] = flag("seed"),
    device: Optional[str] = flag("device"),
    out: Optional[str] = flag("out"),
    name: Optional[str] = flag("name", "Output folder name; unset: <model>-<solver>-nfe<N>."),
) -> None:
    """Draw samples with one solver at one NFE budget; write samples.npz, meta.json and a PNG."""
    from diffsampler.config import SampleConfig, load_config, parse_assignments
    from diffsampler.sample_run import run_sample

    flags = dict(
        model=model,
        trust_pickle=trust_pickle or None,
        solver=solver,
        schedule=schedule,
        nfe=nfe,
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
        device=device,
        out=out,
        name=name,
    )
    cfg = load_config(SampleConfig, resolve_config(config, "sample"), flags, sets)
    cfg.options = {**cfg.options, **parse_assignments(option)}
    cfg.model_options = {**cfg.model_options, **parse_assignments(model_option)}
    result = run_sample(cfg)
    if not _main_rank():
        return
    console.print(
        f"{result.num_samples} samples of {cfg.model} with {cfg.solver}: NFE {result.nfe} "
        f"({result.steps} steps, {result.schedule}) in {result.seconds:.2f} s -> {result.folder}",
        highlight=False,
    )


@app.command("train-amed", cls=config_command("diffsampler.amed.config:AmedTrainConfig"))
@user_errors
def train_amed(
    config: Optional[Path] = config_option("configs/amed/*.yaml"),
    sets: Optional[List[str]] = set_option(),
    model: Optional[str] = flag("model"),
    schedule: Optional[str] = flag("schedule", "Sigma schedule; unset: logsnr for student dpmpp, else polynomial."),
    nfe: Optional[int] = flag("nfe", "NFE the predictor is trained for (odd budgets need afs)."),
    batch_size: Optional[int] = flag("batch_size", "Trajectories per optimizer batch."),
    seed: Optional[int] = flag("seed", "Seed of the latents and the predictor's initialisation."),
    device: Optional[str] = flag("device"),
    out: Optional[str] = flag("out", "Folder of the checkpoint."),
    name: Optional[str] = flag("name", "Checkpoint name (without .pt); unset: <model>-<student>-nfe<N>-<schedule>."),
    fresh: bool = typer.Option(
        False, "--fresh", metavar="", help="Train even when OUT/NAME.pt already holds this config's predictor."
    ),
) -> None:
    """Distil an AMED predictor (arXiv 2312.00094) for one model, solver, NFE and schedule."""
    from diffsampler.amed.config import AmedTrainConfig
    from diffsampler.amed.identity import is_current
    from diffsampler.amed.train import train_and_save
    from diffsampler.config import load_config
    from diffsampler.progress import ProgressEvent
    from diffsampler.terminal import progress_bar

    flags = dict(
        model=model, schedule=schedule, nfe=nfe, batch_size=batch_size, seed=seed, device=device, out=out, name=name
    )
    cfg = load_config(AmedTrainConfig, resolve_config(config, "train-amed"), flags, sets)
    target = Path(cfg.out) / cfg.file_name
    if not fresh and is_current(target, cfg):
        if _main_rank():
            console.print(f"{target} already holds this predictor (same config and model): kept; --fresh trains again")
        return
    with progress_bar("AMED", console, enabled=_main_rank()) as bar:
        path, result = train_and_save(cfg, lambda rep: bar(ProgressEvent(rep.step, rep.total, rep.describe())))
    if not _main_rank():
        return
    meta = result.meta
    console.print(
        f"{meta['num_parameters']:,}-parameter predictor for {meta['solver']}"
        f"{' base=' + meta['base'] if meta['base'] else ''} "
        f"on {cfg.model}, NFE {meta['nfe']} ({meta['schedule']}), final loss {meta['final_loss']:.4g}, "
        f"trained in {meta['training_seconds']:.1f} s -> {path}",
        highlight=False,
    )


@app.command("train-model", cls=config_command("diffsampler.train:TrainConfig"))
@user_errors
def train_model(
    config: Optional[Path] = config_option("configs/train/*.yaml"),
    sets: Optional[List[str]] = set_option(),
    resume: bool = typer.Option(
        False, "--resume", metavar="", help="Continue the run <out>/<name> from its train-state.pt."
    ),
    data: Optional[str] = flag("data"),
    batch_size: Optional[int] = flag("batch_size", "Images per optimizer step."),
    seed: Optional[int] = flag("seed", "Seed of the initialisation, the data order and the noise."),
    device: Optional[str] = flag("device"),
    out: Optional[str] = flag("out", "Parent folder of runs."),
    name: Optional[str] = flag("name", "Run name: the run's folder is <out>/<name>."),
) -> None:
    """Train an EDM U-Net denoiser (optionally PDM-patched); write checkpoints, sample grids and a loss log."""
    from diffsampler.config import load_config
    from diffsampler.terminal import progress_bar
    from diffsampler.train import TrainConfig, train

    flags = dict(data=data, batch_size=batch_size, seed=seed, device=device, out=out, name=name)
    cfg = load_config(TrainConfig, resolve_config(config, "train-model"), flags, sets)
    with progress_bar("train", console) as bar:
        result = train(cfg, resume=resume, progress=bar)
    loss = "-" if result.last_loss is None else f"{result.last_loss:.4f}"
    stop = " (time limit reached)" if result.stopped_early else ""
    console.print(
        f"trained {cfg.name} to step {result.step} ({result.images_seen} images, {result.seconds:.1f} s){stop}, "
        f"last loss {loss} -> {result.folder / 'model.pt'}",
        highlight=False,
    )


@app.command(cls=config_command("diffsampler.bench.config:BenchmarkConfig"))
@user_errors
def benchmark(
    config: Optional[Path] = config_option("configs/benchmark/*.yaml"),
    sets: Optional[List[str]] = set_option(),
    nfe: Optional[str] = flag("nfe", "NFE budgets: 3,5,7,9 or 3-10 (or a mix, 3-5,8)."),
    solvers: Optional[str] = flag(
        "solvers",
        "Comma-separated labels of the config's solvers or registered solver names; unset: every training-free solver.",
    ),
    model: Optional[str] = flag("model"),
    metrics: Optional[str] = flag(
        "metrics", "Comma-separated metrics (rmse, max_error, pixel_fd, ...); unset: those the model supports."
    ),
    num_samples: Optional[int] = flag(
        "num_samples", "Samples per cell (latents seeded per index: more samples extend, never change)."
    ),
    batch_size: Optional[int] = flag("batch_size"),
    seed: Optional[int] = flag("seed", "Seed of the latents (sample i uses (seed, i))."),
    device: Optional[str] = flag("device"),
    name: Optional[str] = flag("name", "Run name: results go to OUT/NAME (a rerun resumes); unset: the model name."),
    out: Optional[str] = flag("out", "Parent folder of runs."),
    fresh: bool = typer.Option(
        False,
        "--fresh",
        metavar="",
        help="Start over: first delete the run folder's run.json, records (records/<label>/nfe<N>/n<S>/<metric>.json), "
        "sample previews (grids/<label>/nfe<N>.png) and reports (table.md, table.csv, sigmas.csv, results.json, "
        "plots, report.html); any other file or folder there is kept.",
    ),
    report_only: bool = typer.Option(
        False,
        "--report-only",
        metavar="",
        help="Sample nothing: rewrite the run's reports (tables, plots, report.html) from the records it holds.",
    ),
) -> None:
    """Compare solvers across NFE budgets on the same latents; resumable; writes tables, plots, sample grids and
    report.html (one self-contained page)."""
    from diffsampler.bench.config import benchmark_config, parse_nfe
    from diffsampler.bench.metric_registry import check_metric_options
    from diffsampler.bench.runner import run_benchmark
    from diffsampler.terminal import progress_bar, recommendation_lines, rich_tables

    def names(text: Optional[str]) -> Optional[list[str]]:
        return None if text is None else [v.strip() for v in text.split(",") if v.strip()]

    flags = dict(
        nfe=None if nfe is None else parse_nfe(nfe),
        model=model,
        metrics=names(metrics),
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
        device=device,
        name=name,
        out=out,
    )
    cfg = benchmark_config(resolve_config(config, "benchmark"), flags, names(solvers), sets)
    check_metric_options(cfg.metric_options)  # before the progress bar is drawn
    with progress_bar("benchmark", err_console, enabled=_main_rank()) as bar:
        if fresh and report_only:
            raise UserError("--fresh deletes the records that --report-only reports on: give one of them")
        outcome = run_benchmark(cfg, fresh, bar, report_only)
    if not _main_rank():
        return
    console.print(outcome.model, highlight=False, markup=False)
    for table in rich_tables(outcome.report, console.width):
        console.print(table)
    report = outcome.report
    if report.any_auto_afs:
        from diffsampler.bench.plan import AUTO_AFS_NOTE

        console.print(f"† {AUTO_AFS_NOTE}", highlight=False)
    for i, reason in enumerate(report.footnotes, 1):
        console.print(f"[{i}] {reason}", highlight=False, markup=False)
    for line in recommendation_lines(report):
        console.print(line, highlight=False, markup=False)
    console.print(
        f"{outcome.sampled} cells sampled, {outcome.reused} reused, in {outcome.seconds:.1f} s "
        f"-> {outcome.folder}/table.md",
        highlight=False,
    )


@app.command(cls=config_command("diffsampler.bench.throughput:ThroughputSettings", keys=False))
@user_errors
def throughput(
    model: str = typer.Option(
        "fmnist-p1", show_default=False, help="Model name or path (see `diffsampler list`). Default fmnist-p1."
    ),
    batch_size: Optional[int] = flag("batch_size"),
    nfe: Optional[int] = flag("nfe", "Network evaluations per sample (one a step for every method)."),
    repeats: Optional[int] = typer.Option(None, help="Timed rounds (each times every method once, in turn)."),
    precision: Optional[str] = typer.Option(None, help="float32, or bfloat16 (CPU autocast of the network)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads (with one, process CPU time is the work done)."),
) -> None:
    """Throughput of our euler and dpmpp 2M against k-diffusion's samplers on the same network, on the CPU, and
    the overhead over the bare network (needs the k-diffusion package)."""
    from diffsampler.bench.throughput import ThroughputSettings, compare_throughput
    from diffsampler.models import load_model
    from diffsampler.terminal import progress_bar, throughput_table

    given = dict(batch_size=batch_size, nfe=nfe, repeats=repeats, precision=precision, threads=threads)
    settings = ThroughputSettings(**{k: v for k, v in given.items() if v is not None})
    denoiser = load_model(model)
    with progress_bar("throughput", err_console, transient=True) as bar:
        result = compare_throughput(denoiser, settings, bar)
    console.print(
        f"model {model}, batch {settings.batch_size}, NFE {settings.nfe}, {settings.precision}, "
        f"{settings.threads} thread(s), {settings.repeats} rounds (CPU)",
        highlight=False,
    )
    console.print(throughput_table(result))
    for pair in result.pairs:
        console.print(
            f"{pair.ours}: {pair.ratio:.3f}x the throughput of k-diffusion (>1: ours faster); over the bare network "
            f"ours {100 * pair.overhead_ours:+.2f}%, k-diffusion {100 * pair.overhead_theirs:+.2f}%; "
            f"max |ours - theirs| {pair.max_difference:.2e}; solver arithmetic alone "
            f"{1e3 * pair.arithmetic_ours:.2f} ms ({100 * pair.arithmetic_fraction_ours:.3f}% of the network) "
            f"against {1e3 * pair.arithmetic_theirs:.2f} ms ({100 * pair.arithmetic_fraction_theirs:.3f}%)",
            highlight=False,
        )


@app.command("search-schedule", cls=config_command("diffsampler.search.run:SearchConfig"))
@user_errors
def search_schedule(
    config: Optional[Path] = config_option("a file of SearchConfig keys"),
    sets: Optional[List[str]] = set_option(),
    method: Optional[str] = flag(
        "method", "gits (arXiv 2405.11326, dynamic programming) or ld3 (arXiv 2405.15506, learned by Adam)."
    ),
    model: Optional[str] = flag("model"),
    solver: Optional[str] = flag("solver", "Solver the schedule is made for."),
    option: Optional[List[str]] = typer.Option(None, "--option", "-o", help="Solver option key=value, repeatable."),
    nfe: Optional[int] = flag("nfe", "NFE budget of the schedule."),
    num_samples: Optional[int] = flag("num_samples", "Teacher samples; unset: 256 (gits), 100 (ld3)."),
    seed: Optional[int] = flag("seed", "Seed of the teacher latents (the benchmark's default seed differs)."),
    batch_size: Optional[int] = flag("batch_size", "Samples per network call of the teacher."),
    device: Optional[str] = flag("device"),
    out: Optional[str] = flag(
        "out", "Schedule file to write; unset: results/schedules/<model>-<solver>-<method>-nfe<N>.json."
    ),
) -> None:
    """Search a sigma grid for one model, solver and NFE; write it as a schedule file for schedule=PATH.json."""
    from diffsampler.config import load_config, parse_assignments
    from diffsampler.search.run import SearchConfig
    from diffsampler.search.run import search_schedule as run

    flags = dict(
        method=method,
        model=model,
        solver=solver,
        nfe=nfe,
        num_samples=num_samples,
        seed=seed,
        batch_size=batch_size,
        device=device,
        out=out,
    )
    cfg = load_config(SearchConfig, config, flags, sets)
    cfg.options = {**cfg.options, **parse_assignments(option)}
    with err_console.status("searching") as status:
        artefact, path = run(cfg, lambda text: status.update(text))
    grid = ", ".join(f"{s:.4g}" for s in artefact.sigmas)
    console.print(
        f"{cfg.method} schedule for {cfg.solver} at NFE {cfg.nfe} in {artefact.seconds:.1f} s: [{grid}] -> {path}",
        highlight=False,
    )


@app.command("compute-ems", cls=config_command("diffsampler.ems.config:EmsConfig"))
@user_errors
def compute_ems(
    config: Optional[Path] = config_option("configs/ems/*.yaml"),
    sets: Optional[List[str]] = set_option(),
    model: Optional[str] = flag("model"),
    data: Optional[str] = flag("data", COMMON_HELP["data"] + " Unset: samples of the model."),
    batch_size: Optional[int] = flag("batch_size", "Data points per JVP batch (bounds the memory)."),
    seed: Optional[int] = flag("seed", "Seed of the data subset, the noise and the probes."),
    device: Optional[str] = flag("device"),
    out: Optional[str] = flag("out", "Output folder; unset: results/ems/<model>/<sigma_min>_<sigma_max>_<N>_<K>."),
) -> None:
    """Estimate DPM-Solver-v3's statistics l, s, b; write l.npz, sb.npz and meta.json (resumable).

    The grid has N + 1 points uniform in lambda = -log(sigma) (--set grid=N) and K data points (--set num_data=K).
    """
    from diffsampler.config import load_config
    from diffsampler.ems.config import EmsConfig
    from diffsampler.ems.run import compute_ems as run
    from diffsampler.terminal import progress_bar

    flags = dict(model=model, data=data, batch_size=batch_size, seed=seed, device=device, out=out)
    cfg = load_config(EmsConfig, resolve_config(config, "compute-ems"), flags, sets)
    with progress_bar("compute-ems", err_console, enabled=_main_rank(), transient=True) as bar:
        result = run(cfg, bar)
    if not _main_rank():
        return
    console.print(
        f"statistics of {cfg.model} on {result.num_intervals + 1} grid points from {result.num_data} data points "
        f"in {result.seconds:.1f} s ({result.resumed_points} points resumed) -> {result.folder}",
        highlight=False,
    )


@app.command("list")
@user_errors
def list_things() -> None:
    """List the registered models, solvers, schedules and metrics (plugins marked with their package), and the
    packaged configs (--config NAME), one line each."""
    from diffsampler import models, schedules, solvers
    from diffsampler.bench import metric_registry
    from diffsampler.packaged_configs import KINDS, packaged_configs
    from diffsampler.terminal import name_table

    for registry in (models, solvers, schedules, metric_registry):
        registry.load_plugins()
    for title, group, rows in (
        ("models", "models", [(m.name, m.summary) for m in models.MODELS.values()]),
        ("model loaders", "", list(models.LOADERS.items())),
        (
            "solvers",
            "solvers",
            [(s.name, f"{s.summary}; default schedule {s.default_schedule}") for s in solvers.SOLVERS.values()],
        ),
        ("schedules", "schedules", [(s.name, s.summary) for s in schedules.SCHEDULES.values()]),
        ("metrics", "metrics", [(m.name, m.summary) for m in metric_registry.METRICS.values()]),
    ):
        marked = []
        for name, summary in rows:
            package = plugin_package(f"diffsampler.{group}", name) if group else None
            marked.append((name, summary if package is None else f"{summary} (plugin: {package})"))
        console.print(name_table(title, marked))
    configs = [c for command in KINDS for c in packaged_configs(command).values()]
    rows = [(f"{c.command} {c.name}", _config_line(c)) for c in configs]
    console.print(name_table("configs (diffsampler COMMAND --config NAME)", rows))


def _config_line(config: Any) -> str:
    """A packaged config's first clause, and the repository files it reads (its cells need a checkout)."""
    if not config.reads:
        return config.summary
    folders = ", ".join(dict.fromkeys(str(Path(p).parent) for p in config.reads))
    return f"{config.summary} [reads files of the repository: {folders}; run it from a checkout]"


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


PRECISION_HELP = (
    "Inception's precision: float32 (the clean protocol; default) or bfloat16 (autocast, about 2.7x faster on "
    "CPUs with AMX; FID moved by at most 0.21% in a check, see README; statistics cached apart)."
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
    precision: str = typer.Option("float32", show_default=False, help=PRECISION_HELP),
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
        from diffsampler.atomic import check_own_file, check_path_names, check_writable_file
        from diffsampler.metrics.ref_stats import is_statistics_file

        check_path_names(out)
        check_writable_file(out)
        check_own_file(out, is_statistics_file, "a statistics file (mu, sigma)")
    weights = feature_network(features, inception if features == "inception" else None, precision)
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
    precision: str = typer.Option("float32", show_default=False, help=PRECISION_HELP),
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
    weights = feature_network(features, inception if features == "inception" else None, precision)
    batch_size = batch_size if batch_size is not None else getattr(weights, "batch_size", None)
    with _image_progress(f"{features} features") as progress:
        report = score_samples(samples, ref, weights, dev, kid, batch_size, backend, cache_dir, progress, world)
    if not _main_rank():
        return
    kid_text = f"  KID {report.kid:.6f}" if report.kid is not None else ""
    name = "FID" if features == "inception" else f"FD_{features}"
    console.print(
        f"{name} {report.fid:.4f}{kid_text}  ({report.num_samples} samples vs {report.reference}, {report.backend})",
        highlight=False,
        soft_wrap=True,
    )


def main() -> None:
    from diffsampler.device import reuse_freed_memory

    reuse_freed_memory()
    app(prog_name="diffsampler")
