"""Run the (solver x NFE) grid: same latents for every cell, one record per metric as soon as it is known."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from diffsampler import __version__, distributed
from diffsampler.atomic import atomic_file, ensure_writable_dir
from diffsampler.bench.config import BenchmarkConfig, solver_entries
from diffsampler.bench.metrics import DEFAULT_METRICS, METRICS, Metric, MetricContext, get_metric
from diffsampler.bench.plan import Cell, plan_cells
from diffsampler.bench.report import Report, build_report, write_reports
from diffsampler.codehash import metric_code, solver_code
from diffsampler.bench.store import Manifest, ResultStore
from diffsampler.errors import UserError, resumable
from diffsampler.images import save_grid, save_scatter
from diffsampler.models import Denoiser, load_model, model_label
from diffsampler.sampling import generate_sharded, prepared_options, resolve_device
from diffsampler.solvers import get_solver


@dataclass(frozen=True)
class BenchmarkOutcome:
    """What a benchmark run did and the report made from its records."""

    folder: Path
    report: Report
    sampled: int
    reused: int
    seconds: float
    reporter: bool = True


def default_run_name(model: str) -> str:
    """The model's label (its name, or '<folder>-<stem>' / '<kind>-<stem>' for a file) made safe for a folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model_label(model)).strip("-") or "run"


def choose_metrics(names: list[str] | None, denoiser: Denoiser, model: str) -> list[Metric]:
    """The named metrics (each must be able to score the model), or the defaults that can."""
    if names is None:
        return [METRICS[n] for n in DEFAULT_METRICS if n in METRICS and not (METRICS[n].unavailable and METRICS[n].unavailable(denoiser))]
    metrics = []
    for name in dict.fromkeys(names):
        metric = get_metric(name)
        reason = metric.unavailable(denoiser) if metric.unavailable else None
        if reason:
            raise UserError(f"metric '{name}' cannot score model '{model}': it {reason}; leave it out of --metrics")
        metrics.append(metric)
    return metrics


def _manifest(cfg: BenchmarkConfig, denoiser: Denoiser, cells: list[Cell], metrics: list[Metric], sigma_min: float, sigma_max: float) -> Manifest:
    desc = denoiser.describe()
    fixed = {
        "model": cfg.model,
        "model_sha256": desc["sha256"],
        "sample_shape": desc["sample_shape"],
        "seed": cfg.seed,
        "dtype": cfg.dtype,
        "sigma_min": sigma_min,
        "sigma_max": sigma_max,
        "auto_afs": cfg.auto_afs,
    }
    specs = {cell.entry.solver: get_solver(cell.entry.solver) for cell in cells}
    codes = {name: solver_code(spec.sample_fn, spec.prepare) for name, spec in specs.items()}
    solvers = {cell.entry.label: {**cell.entry.definition(), "code": codes[cell.entry.solver]} for cell in cells}
    metric_defs = {
        m.name: {
            "version": m.version,
            "options": cfg.metric_options.get(m.name, {}),
            "code": metric_code(m.compute, m.prepare, m.unavailable),
        }
        for m in metrics
    }
    return Manifest(fixed, solvers, metric_defs)


def _save_preview(samples: torch.Tensor, shape: tuple[int, ...], path: Path) -> None:
    if path.exists() or not (len(shape) == 3 or shape == (2,)):
        return
    with atomic_file(path) as tmp:
        if len(shape) == 3:
            save_grid(samples, tmp)
        else:
            save_scatter(samples, tmp)


def _record(
    cfg: BenchmarkConfig, cell: Cell, metric: Metric, value: float | None, timing: dict[str, Any], error: str | None, note: str | None
) -> dict[str, Any]:
    assert cell.plan is not None
    return {
        "model": cfg.model,
        "label": cell.entry.label,
        "solver": cell.entry.solver,
        "options": cell.options,
        "auto_afs": cell.auto_afs,
        "schedule": cell.plan.schedule,
        "rho": cell.entry.rho,
        "nfe": cell.nfe,
        "steps": cell.plan.steps,
        "sigmas": cell.plan.sigmas.tolist(),
        "num_samples": cfg.num_samples,
        "seed": cfg.seed,
        "metric": metric.name,
        "value": value,
        "error": error,
        "note": note,
        **timing,
        "diffsampler": __version__,
    }


def _stopped_at(progress: Progress, folder: Path) -> str:
    """Where an interrupted benchmark stopped, for the one-line message."""
    task = progress.tasks[0]
    where = task.fields.get("cell") or "its first cell"
    done = f"{int(task.completed)} of {int(task.total or 0)} cells done"
    return f"benchmark stopped at {where} with {done}, their records kept in {folder}"


def run_benchmark(cfg: BenchmarkConfig, fresh: bool = False, console: Console | None = None) -> BenchmarkOutcome:
    """Sample every missing cell, score it with every metric, write records, then the reports.

    Under torchrun the batches of every cell are dealt across ranks (``diffsampler.distributed``) and
    gathered in index order, so samples and metrics equal a single process's; rank 0 alone writes.
    """
    console = console or Console(stderr=True)
    tic_all = time.perf_counter()
    entries = solver_entries(cfg.solvers)
    denoiser = load_model(cfg.model)
    metrics = choose_metrics(cfg.metrics, denoiser, cfg.model)
    unknown_opts = [k for k in cfg.metric_options if k not in {m.name for m in metrics}]
    if unknown_opts:
        raise UserError(f"metric_options names '{unknown_opts[0]}', which is not among the metrics of this run")
    world, device = distributed.setup(resolve_device(cfg.device))
    denoiser.to(device)
    sigma_min = denoiser.sigma_min if cfg.sigma_min is None else cfg.sigma_min
    sigma_max = denoiser.sigma_max if cfg.sigma_max is None else cfg.sigma_max
    if not 0 < sigma_min < sigma_max:
        raise UserError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    cells = plan_cells(entries, cfg.nfe, sigma_min, sigma_max, cfg.auto_afs)
    out = Path(cfg.out)
    store = ResultStore(out / (cfg.name or default_run_name(cfg.model)))
    manifest = _manifest(cfg, denoiser, cells, metrics, sigma_min, sigma_max)
    store.check(manifest, fresh)
    if world.is_main:
        ensure_writable_dir(out)

    ctx = MetricContext(denoiser, cfg.model, cfg.seed, cfg.num_samples, sigma_max, sigma_min, device, cfg.batch_size,
                        out / ".cache", {k: dict(v) for k, v in cfg.metric_options.items()}, world=world)
    pending = [
        (cell, missing)
        for cell in cells
        if cell.runnable
        for missing in [[m for m in metrics if fresh or store.read(cell.entry.label, cell.nfe, cfg.num_samples, m.name) is None]]
        if missing
    ]
    distributed.barrier(world)
    notes: dict[str, str | None] = {}
    for rank in range(world.size):
        if rank == world.rank:
            for metric in {m.name: m for _, missing in pending for m in missing}.values():
                if metric.prepare is not None:
                    with console.status(f"preparing {metric.name} for {cfg.num_samples} samples"):
                        notes[metric.name] = metric.prepare(ctx)
        distributed.barrier(world)
    if world.is_main:
        store.open(manifest, fresh)
    unavailable: dict[tuple[str, int], str] = {}
    dtype = getattr(torch, cfg.dtype)
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("cells"),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        TextColumn("{task.fields[cell]}"),
    )
    def stopped() -> str:
        return _stopped_at(progress, store.folder)

    with Progress(*columns, console=console, disable=not world.is_main) as progress, resumable(stopped):
        task = progress.add_task("benchmark", total=len(pending), rate="", cell="")
        for cell, missing in pending:
            assert cell.plan is not None
            progress.update(task, cell=f"{cell.entry.label} @ NFE {cell.nfe}")
            spec = get_solver(cell.entry.solver)
            try:
                options = prepared_options(spec, cell.options, denoiser, cell.plan)
            except UserError as exc:
                unavailable[(cell.entry.label, cell.nfe)] = str(exc)
                progress.advance(task)
                continue
            error, samples = None, None
            tic = time.perf_counter()
            try:
                samples = generate_sharded(
                    denoiser, spec, options, cell.plan, range(cfg.num_samples), cfg.seed, cfg.batch_size, device, dtype, world
                )
            except UserError as exc:
                error = str(exc)
            seconds = time.perf_counter() - tic
            timing = {
                "nfe_used": denoiser.calls,
                "sampling_seconds": seconds,
                "samples_per_second": cfg.num_samples / seconds if seconds > 0 else None,
                "device": str(device),
                "batch_size": cfg.batch_size,
                "world_size": world.size,
            }
            if samples is not None and world.is_main:
                _save_preview(samples, denoiser.sample_shape, store.grid_path(cell.entry.label, cell.nfe))
            for metric in missing:
                value = None if samples is None else metric.compute(samples, ctx)
                if world.is_main:
                    store.write(_record(cfg, cell, metric, value, timing, error, notes.get(metric.name)))
            progress.update(task, advance=1, rate=f"{cfg.num_samples / seconds:.0f} samples/s" if seconds > 0 else "")
    distributed.barrier(world)
    report = build_report(cfg, cells, metrics, store, unavailable)
    if world.is_main:
        write_reports(store.folder, report)
    outcome = BenchmarkOutcome(store.folder, report, len(pending), sum(c.runnable for c in cells) - len(pending), time.perf_counter() - tic_all)
    return replace(outcome, reporter=world.is_main)
