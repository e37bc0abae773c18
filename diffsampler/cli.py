"""The `diffsampler` command line: one small function per command, parsing only."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Callable, List, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from diffsampler.errors import UserError

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
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            if _state["debug"]:
                raise
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks and debug logs.")) -> None:
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
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (configs/sample/*.yaml); options below override it."),
    model: Optional[str] = typer.Option(None, help="Model name (see `diffsampler list`). Default gmm-fmnist."),
    solver: Optional[str] = typer.Option(None, help="Solver name (see `diffsampler list`). Default dpm2."),
    nfe: Optional[int] = typer.Option(None, help="Network evaluations per sample. Default 10."),
    schedule: Optional[str] = typer.Option(None, help="Sigma schedule; default: the solver's own."),
    rho: Optional[float] = typer.Option(None, help="Schedule exponent (polynomial: 7, time_uniform: 1 or 2)."),
    sigma_min: Optional[float] = typer.Option(None, help="Smallest sigma of the grid; default: the model's."),
    sigma_max: Optional[float] = typer.Option(None, help="Largest sigma of the grid; default: the model's."),
    sigmas: Optional[str] = typer.Option(None, help="Explicit grid, comma-separated and descending (replaces schedule)."),
    option: Optional[List[str]] = typer.Option(None, "--option", "-o", help="Solver option key=value, repeatable (e.g. -o afs=true)."),
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
        model=model, solver=solver, nfe=nfe, schedule=schedule, rho=rho, sigma_min=sigma_min, sigma_max=sigma_max,
        sigmas=_float_list(sigmas), num_samples=num_samples, batch_size=batch_size, seed=seed, device=device,
        dtype=dtype, out=out, name=name,
    )
    cfg = load_config(SampleConfig, config, overrides)
    cfg.options = {**cfg.options, **parse_assignments(option)}
    result = run_sample(cfg)
    console.print(
        f"{result.num_samples} samples of {cfg.model} with {cfg.solver}: NFE {result.nfe} "
        f"({result.steps} steps, {result.schedule}) in {result.seconds:.2f} s -> {result.folder}",
        highlight=False,
    )


@app.command("compute-ems")
@user_errors
def compute_ems(
    model: str = typer.Option("gmm-fmnist", help="Model name (see `diffsampler list`)."),
    data: Optional[str] = typer.Option(None, help="Data source (fashion-mnist[:test], image folder, .zip, .npz); default: samples of the model."),
    grid: int = typer.Option(120, help="Grid intervals N: statistics at N + 1 points uniform in lambda = -log(sigma)."),
    num_data: int = typer.Option(1024, help="Data points K (the same K at every grid point)."),
    batch: int = typer.Option(256, help="Data points per JVP batch (bounds the memory)."),
    seed: int = typer.Option(0, help="Seed of the data subset, the noise and the probes."),
    out: Optional[str] = typer.Option(None, help="Output folder. Default results/ems/<model>/<sigma_min>_<sigma_max>_<N>_<K>."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Estimate DPM-Solver-v3's statistics l, s, b; write l.npz, sb.npz and meta.json (resumable)."""
    from diffsampler.ems.run import compute_ems as run

    result = run(model, data, grid, num_data, batch, seed, out, device)
    console.print(
        f"statistics of {model} on {result.num_intervals + 1} grid points from {result.num_data} data points "
        f"in {result.seconds:.1f} s ({result.resumed_points} points resumed) -> {result.folder}",
        highlight=False,
    )


@app.command("list")
@user_errors
def list_things() -> None:
    """List the registered models, solvers and schedules, one line each."""
    from diffsampler.models import MODELS
    from diffsampler.schedules import SCHEDULES
    from diffsampler.solvers import SOLVERS

    for title, rows in (
        ("models", [(m.name, m.summary) for m in MODELS.values()]),
        ("solvers", [(s.name, f"{s.summary}; default schedule {s.default_schedule}") for s in SOLVERS.values()]),
        ("schedules", [(s.name, s.summary) for s in SCHEDULES.values()]),
    ):
        table = Table(title=title, show_header=False, title_justify="left", box=None)
        table.add_column(style="bold cyan")
        table.add_column()
        for row in rows:
            table.add_row(*row)
        console.print(table)


def main() -> None:
    app(prog_name="diffsampler")
