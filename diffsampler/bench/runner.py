"""Run the (solver x NFE) grid: same latents for every cell, one record per metric as soon as it is known."""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from diffsampler import __version__, distributed
from diffsampler.artefacts import prepare_hook
from diffsampler.atomic import atomic_file, ensure_writable_dir
from diffsampler.bench.config import BenchmarkConfig, solver_entries
from diffsampler.bench.converged import Converged, read_converged
from diffsampler.bench.html_report import write_html
from diffsampler.bench.learned import learned_schedules, warn_schedule_files
from diffsampler.bench.metric_registry import (
    DEFAULT_METRICS,
    METRICS,
    NETWORK_DEFAULT_METRICS,
    Metric,
    MetricContext,
    check_metric_options,
    expand_metrics,
    get_metric,
    scored_count,
)
from diffsampler.bench.plan import Cell, plan_cells
from diffsampler.bench.recommend import primary_metric
from diffsampler.bench.report import Report, build_report, write_reports
from diffsampler.bench.store import Manifest, ResultStore
from diffsampler.codehash import metric_code, solver_code
from diffsampler.config import recorded_precision, with_precision
from diffsampler.digest import file_sha256
from diffsampler.errors import UserError, resumable
from diffsampler.images import save_grid, save_scatter
from diffsampler.metrics.bootstrap import Score, as_score
from diffsampler.models import Denoiser, model_label, model_summary
from diffsampler.progress import ProgressFn, report
from diffsampler.run_setup import RunSetup, setup_run
from diffsampler.sampling import Generation, generate_sharded, prepared_options
from diffsampler.solvers import get_solver


@dataclass(frozen=True)
class BenchmarkOutcome:
    """What a benchmark run did and the report made from its records."""

    folder: Path
    report: Report
    sampled: int
    reused: int
    seconds: float
    model: str
    """One line saying what the model is and the precision its network ran in."""


def default_run_name(model: str) -> str:
    """The model's label (its name, or '<folder>-<stem>' / '<kind>-<stem>' for a file) made safe for a folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model_label(model)).strip("-") or "run"


def _unavailable(metric: Metric, denoiser: Denoiser) -> str | None:
    """Why ``metric`` cannot score this model, or None."""
    return metric.unavailable(denoiser) if metric.unavailable is not None else None


def default_metrics(denoiser: Denoiser) -> dict[str, dict[str, Any]]:
    """name -> default options of the metrics a run without ``metrics`` uses: ``DEFAULT_METRICS`` for an analytic
    model (one with exact moments), else ``NETWORK_DEFAULT_METRICS``; those that cannot score the model left out."""
    analytic = not _unavailable(METRICS["pixel_fd"], denoiser)
    chosen = dict.fromkeys(DEFAULT_METRICS, {}) if analytic else NETWORK_DEFAULT_METRICS
    return {name: dict(opts) for name, opts in chosen.items() if not _unavailable(METRICS[name], denoiser)}


def choose_metrics(names: list[str] | None, denoiser: Denoiser, model: str) -> list[Metric]:
    """The named metrics (each must be able to score the model), or the defaults that can."""
    if names is None:
        return [METRICS[n] for n in default_metrics(denoiser)]
    metrics = []
    for name in expand_metrics(names):
        metric = get_metric(name)
        reason = _unavailable(metric, denoiser)
        if reason:
            raise UserError(f"metric '{name}' cannot score model '{model}': it {reason}; leave it out of --metrics")
        metrics.append(metric)
    return metrics


def artefacts_sha256(values: Iterable[object]) -> str | None:
    """sha256 (12 hex digits) over the files that ``values`` name (a folder: the files directly in it, not hidden
    ones), None if none do.

    A benchmark folds it into a label's code hash, so that records made with another predictor or statistics
    file than the one now at the same path are recomputed rather than reused.
    """
    files: set[Path] = set()
    for value in values:
        path = Path(value) if isinstance(value, str) and value else None
        if path is not None and path.is_file():
            files.add(path)
        elif path is not None and path.is_dir():
            files.update(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        return None
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(str(path).encode() + b"\0" + file_sha256(path).encode() + b"\0")
    return digest.hexdigest()[:12]


def cell_artefacts(cell: Cell) -> str | None:
    """The hash of the artefact files (the options its solver's spec ``requires``: an AMED predictor, DPM-Solver-v3
    statistics) that one cell names; its records carry it, so a cell is recomputed when its own files change and
    not when the run gains budgets that name other files."""
    keys = get_solver(cell.entry.solver).requires
    return artefacts_sha256(cell.options.get(key) for key in keys)


def _manifest(
    cfg: BenchmarkConfig,
    denoiser: Denoiser,
    cells: list[Cell],
    metrics: list[Metric],
    sigma_min: float,
    sigma_max: float,
) -> Manifest:
    desc = denoiser.describe()
    fixed = {
        "model": cfg.model,
        "model_sha256": desc.get("weights_sha256", desc["sha256"]),
        "sample_shape": desc["sample_shape"],
        "seed": cfg.run.seed,
        "dtype": cfg.run.dtype,
        "sigma_min": sigma_min,
        "sigma_max": sigma_max,
        "auto_afs": cfg.auto_afs,
        **recorded_precision(cfg.run.precision),
    }
    specs = {cell.entry.solver: get_solver(cell.entry.solver) for cell in cells}
    model_code = f"+model:{desc['code_sha256'][:12]}" if "code_sha256" in desc else ""
    codes = {name: solver_code(spec.sample_fn, prepare_hook(name)) + model_code for name, spec in specs.items()}
    labels = {cell.entry.label: cell.entry for cell in cells}
    solvers = {label: {**entry.definition(), "code": codes[entry.solver]} for label, entry in labels.items()}
    metric_defs = {
        m.name: {
            "version": m.version,
            "options": cfg.metric_options.get(m.option_name, {}),
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
    cfg: BenchmarkConfig,
    cell: Cell,
    metric: Metric,
    score: Score | None,
    timing: dict[str, Any],
    error: str | None,
    note: str | None,
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
        "artefacts": cell_artefacts(cell),
        "num_samples": cfg.num_samples,
        "scored": scored_count(cfg.metric_options.get(metric.option_name, {}), cfg.num_samples),
        "seed": cfg.run.seed,
        "metric": metric.name,
        **(score or Score()).fields(),
        "error": error,
        "note": note,
        **timing,
        "diffsampler": __version__,
    }


@dataclass(frozen=True)
class _Run:
    """What every cell of one benchmark run shares."""

    cfg: BenchmarkConfig
    denoiser: Denoiser
    ctx: MetricContext
    store: ResultStore
    world: distributed.World
    notes: dict[str, str | None]


def _resolved(cfg: BenchmarkConfig, setup: RunSetup) -> BenchmarkConfig:
    """A copy of ``cfg`` as the run uses and records it: the precision auto resolved to, and without ``metrics``
    the default metrics' options merged under the config's."""
    defaults = {} if cfg.metrics is not None else default_metrics(setup.denoiser)
    options = {**{name: opts for name, opts in defaults.items() if opts}, **cfg.metric_options}
    return replace(with_precision(cfg, setup.precision), metric_options=options)


def _checked_metrics(cfg: BenchmarkConfig, denoiser: Denoiser) -> list[Metric]:
    """The run's metrics; ``metric_options`` may only name those."""
    metrics = choose_metrics(cfg.metrics, denoiser, cfg.model)
    check_metric_options(cfg.metric_options, [m.option_name for m in metrics])
    primary_metric(cfg.primary_metric, [m.name for m in metrics])
    return metrics


def _missing(cell: Cell, metrics: list[Metric], store: ResultStore, num_samples: int) -> list[Metric]:
    """The metrics without a current record of ``cell``: none yet, a damaged one, or one made on another sigma grid
    (a schedule file edited in place, a learned schedule searched by other code) or with other artefact files."""
    assert cell.plan is not None
    sigmas, artefacts, missing = cell.plan.sigmas.tolist(), cell_artefacts(cell), []
    for metric in metrics:
        record = store.read(cell.entry.label, cell.nfe, num_samples, metric.name)
        why = None if record is None else _made_for_other(record, sigmas, artefacts)
        if why is not None:
            store.outdated(cell.entry.label, cell.nfe, num_samples, metric.name, why)
            record = None
        if record is None:
            missing.append(metric)
    return missing


def _made_for_other(record: dict[str, Any], sigmas: list[float], artefacts: str | None) -> str | None:
    """Why a record does not describe the cell as it is now (None when it does)."""
    if record.get("sigmas") != sigmas:
        return "on another sigma grid"
    if record.get("artefacts") != artefacts:
        return "with other artefact files (AMED predictor or DPM-Solver-v3 statistics)"
    return None


def _pending(
    cells: list[Cell], metrics: list[Metric], store: ResultStore, num_samples: int, fresh: bool
) -> list[tuple[Cell, list[Metric]]]:
    """The runnable cells with the metrics they still lack (all of them with ``fresh``)."""
    return [
        (cell, missing)
        for cell in cells
        if cell.runnable
        for missing in [list(metrics) if fresh else _missing(cell, metrics, store, num_samples)]
        if missing
    ]


def _prepare_metrics(
    pending: list[tuple[Cell, list[Metric]]], ctx: MetricContext, progress: ProgressFn | None
) -> dict[str, str | None]:
    """Run each needed metric's ``prepare`` once, rank after rank; its notes by metric name."""
    notes: dict[str, str | None] = {}
    for rank in range(ctx.world.size):
        if rank == ctx.world.rank:
            for metric in {m.name: m for _, missing in pending for m in missing}.values():
                if metric.prepare is not None:
                    report(progress, 0, len(pending), f"preparing {metric.name} for {ctx.num_samples} samples")
                    notes[metric.name] = metric.prepare(ctx)
        distributed.barrier(ctx.world)
    return notes


def _sample_cell(run: _Run, cell: Cell, missing: list[Metric]) -> tuple[str | None, float]:
    """Sample one cell and write one record per missing metric: (why it cannot run, or None; sampling seconds)."""
    assert cell.plan is not None
    cfg, denoiser, world = run.cfg, run.denoiser, run.world
    spec = get_solver(cell.entry.solver)
    try:
        options = prepared_options(spec, cell.options, denoiser, cell.plan)
    except UserError as exc:
        return str(exc), 0.0
    error, samples = None, None
    tic = time.perf_counter()
    try:
        job = Generation(
            denoiser,
            spec,
            options,
            cell.plan,
            cfg.run.seed,
            cfg.run.batch_size,
            run.ctx.device,
            getattr(torch, cfg.run.dtype),
        )
        samples = generate_sharded(job, range(cfg.num_samples), world)
    except UserError as exc:
        error = str(exc)
    seconds = time.perf_counter() - tic
    timing = {
        "nfe_used": denoiser.calls,
        "sampling_seconds": seconds,
        "samples_per_second": cfg.num_samples / seconds if seconds > 0 else None,
        "device": str(run.ctx.device),
        "batch_size": cfg.run.batch_size,
        "world_size": world.size,
    }
    if samples is not None and world.is_main:
        _save_preview(samples, denoiser.sample_shape, run.store.grid_path(cell.entry.label, cell.nfe))
    for metric in missing:
        score = None if samples is None else as_score(metric.compute(samples, run.ctx))
        if world.is_main:
            run.store.write(_record(cfg, cell, metric, score, timing, error, run.notes.get(metric.name)))
    return None, seconds


def _sample_cells(
    run: _Run, pending: list[tuple[Cell, list[Metric]]], progress: ProgressFn | None
) -> dict[tuple[str, int], str]:
    """Sample the pending cells in order; why each cell that cannot run was skipped, by (label, NFE).

    Ctrl-C stops with a message saying where, and that the same command resumes (the records written are kept).
    """
    unavailable: dict[tuple[str, int], str] = {}
    rate, where, done = "", "its first cell", 0

    def stopped() -> str:
        kept = f"their records kept in {run.store.folder}"
        return f"benchmark stopped at {where} with {done} of {len(pending)} cells done, {kept}"

    with resumable(stopped):
        for cell, missing in pending:
            where = f"{cell.entry.label} @ NFE {cell.nfe}"
            report(progress, done, len(pending), f"{where}{rate}")
            reason, seconds = _sample_cell(run, cell, missing)
            if reason is not None:
                unavailable[(cell.entry.label, cell.nfe)] = reason
            elif seconds > 0:
                rate = f" (last: {run.cfg.num_samples / seconds:.0f} samples/s)"
            done += 1
    report(progress, len(pending), len(pending), "reports")
    return unavailable


def run_benchmark(
    cfg: BenchmarkConfig, fresh: bool = False, progress: ProgressFn | None = None, report_only: bool = False
) -> BenchmarkOutcome:
    """Sample every missing cell, score it with every metric, write records, then the reports; ``report_only``
    samples nothing and rewrites the reports from the records there are (``_report_only``).

    Under torchrun the batches of every cell are dealt across ranks (``diffsampler.distributed``) and
    gathered in index order, so samples and metrics equal a single process's; rank 0 alone writes.
    ``progress`` hears of each metric's preparation and each cell (done of the pending cells).
    """
    tic_all = time.perf_counter()
    check_metric_options(cfg.metric_options)
    entries = solver_entries(cfg.solvers)
    setup = setup_run(
        cfg.model,
        cfg.run.device,
        (cfg.sigma_min, cfg.sigma_max),
        model_options=cfg.model_options,
        precision=cfg.run.precision,
    )
    denoiser, world, device, sigma_min, sigma_max = (
        setup.denoiser,
        setup.world,
        setup.device,
        setup.sigma_min,
        setup.sigma_max,
    )
    cfg = _resolved(cfg, setup)
    metrics = _checked_metrics(cfg, denoiser)
    converged = read_converged(cfg.converged, cfg.model, cfg.run.seed, cfg.num_samples)
    out = Path(cfg.out)
    warn_schedule_files(entries, cfg.nfe, denoiser)
    learned = learned_schedules(cfg.model, denoiser, device, cfg.run, out / ".cache" / "schedules", progress)
    cells = plan_cells(entries, cfg.nfe, sigma_min, sigma_max, cfg.auto_afs, learned, denoiser.flow_grid)
    store = ResultStore(out / (cfg.name or default_run_name(cfg.model)))
    manifest = _manifest(cfg, denoiser, cells, metrics, sigma_min, sigma_max)
    store.check(manifest, fresh)
    if report_only:
        return _report_only(cfg, cells, metrics, store, converged, _model_line(cfg, setup))
    if world.is_main:
        ensure_writable_dir(out)
    ctx = MetricContext(
        denoiser,
        cfg.model,
        cfg.run.seed,
        cfg.num_samples,
        sigma_max,
        sigma_min,
        device,
        cfg.run.batch_size,
        out / ".cache",
        {k: dict(v) for k, v in cfg.metric_options.items()},
        world=world,
    )
    pending = _pending(cells, metrics, store, cfg.num_samples, fresh)
    distributed.barrier(world)
    notes = _prepare_metrics(pending, ctx, progress)
    if world.is_main:
        store.open(manifest, fresh)
    run = _Run(cfg, denoiser, ctx, store, world, notes)
    unavailable = _sample_cells(run, pending, progress)
    distributed.barrier(world)
    result = build_report(cfg, cells, metrics, store, unavailable, converged)
    if world.is_main:
        write_reports(store.folder, result)
        write_html(store.folder, result)
    runnable = sum(c.runnable for c in cells)
    seconds = time.perf_counter() - tic_all
    return BenchmarkOutcome(
        store.folder, result, len(pending), runnable - len(pending), seconds, _model_line(cfg, setup)
    )


def _not_current(
    cells: list[Cell], metrics: list[Metric], store: ResultStore, num_samples: int
) -> dict[tuple[str, int], str]:
    """Cells whose record (of any metric) was made on another sigma grid or other artefacts, and why; grids equal
    to 1e-12 relative are the same (the last bits of a schedule's float64 arithmetic vary between library versions).
    """
    out = {}
    for cell in cells:
        if cell.plan is None:
            continue
        sigmas, artefacts = cell.plan.sigmas.tolist(), cell_artefacts(cell)
        for metric in metrics:
            record = store.read(cell.entry.label, cell.nfe, num_samples, metric.name)
            grid = None if record is None else record.get("sigmas")
            if isinstance(grid, list) and len(grid) == len(sigmas):
                grid = sigmas if all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(grid, sigmas)) else grid
            why = None if record is None else _made_for_other({**record, "sigmas": grid}, sigmas, artefacts)
            if why is not None:
                out[(cell.entry.label, cell.nfe)] = f"its record was made {why}; rerun without --report-only"
    return out


def _report_only(
    cfg: BenchmarkConfig, cells: list[Cell], metrics: list[Metric], store: ResultStore, converged: Converged, line: str
) -> BenchmarkOutcome:
    """The reports of an existing run rewritten from its records, nothing sampled, no record changed (for reports
    of a newer version from costly records); records made by earlier code are shown and named in a note."""
    tic = time.perf_counter()
    if not store.is_run():
        raise UserError(f"{store.folder} holds no benchmark run to report on; run it once without --report-only")
    stale = sorted(store.stale_labels) + sorted(store.stale_metrics)
    store.stale_labels, store.stale_metrics = set(), set()  # shown, not recomputed
    result = build_report(cfg, cells, metrics, store, _not_current(cells, metrics, store, cfg.num_samples), converged)
    if stale:
        result.notes.append(
            "reports rebuilt from the records (--report-only); the code of "
            f"{', '.join(stale)} changed since their records were made (a rerun without it recomputes them)"
        )
    write_reports(store.folder, result)
    write_html(store.folder, result)
    return BenchmarkOutcome(store.folder, result, 0, sum(c.runnable for c in cells), time.perf_counter() - tic, line)


def _model_line(cfg: BenchmarkConfig, setup: RunSetup) -> str:
    network = f"; network in {setup.precision}" if setup.denoiser.supports_autocast else ""
    return f"model {cfg.model}: {model_summary(cfg.model)}{network}"
