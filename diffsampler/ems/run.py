"""`diffsampler compute-ems`: statistics for one model, resumable per grid point, written atomically.

Each finished grid point is saved as one small file in `<out>.partial/`; a rerun with the same settings
skips those points (and reproduces an uninterrupted run exactly: every point has its own noise generator).
When all points are done, `l.npz`, `sb.npz` and `meta.json` appear in `<out>` at once and the partial folder
is removed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffsampler import distributed
from diffsampler.atomic import (
    atomic_dir,
    atomic_write_bytes,
    check_path_names,
    check_replaceable,
    ensure_writable_dir,
    remove_own_file,
)
from diffsampler.ems.config import EmsConfig
from diffsampler.ems.estimate import RIDGE, lambda_grid, point_generator, point_record, statistics_from_records
from diffsampler.ems.format import write_statistics
from diffsampler.errors import UNREADABLE_FILE, UserError, resumable
from diffsampler.models import Denoiser, model_label
from diffsampler.progress import ProgressFn, report
from diffsampler.run_setup import setup_run
from diffsampler.sampling import Generation, generate_sharded, plan_grid
from diffsampler.solvers.dpm_solver_v3 import EmpiricalStatistics

log = logging.getLogger(__name__)

MODEL_SAMPLE_SOLVER = "heun"
MODEL_SAMPLE_NFE = 100
"""Without data, x0 are model samples from Heun with 50 steps (100 NFE) on the EDM grid."""
RUN_FILE = "run.json"
COMMAND = "compute-ems"


@dataclass(frozen=True)
class EmsOutcome:
    folder: Path
    num_intervals: int
    num_data: int
    seconds: float
    resumed_points: int
    shrunk: int


def default_out(model: str, sigma_min: float, sigma_max: float, grid: int, num_data: int) -> Path:
    """results/ems/<model>/<sigma_min>_<sigma_max>_<N>_<K>, the authors' folder naming."""
    return Path("results/ems") / model_label(model) / f"{sigma_min:g}_{sigma_max:g}_{grid}_{num_data}"


def data_points(
    denoiser: Denoiser, source: str | None, num_data: int, seed: int, batch: int, device: torch.device
) -> tuple[torch.Tensor, str]:
    """K data points (float32, on the CPU) from a dataset source (a random subset) or from the model itself."""
    if source is None:
        from diffsampler.solvers import get_solver

        spec = get_solver(MODEL_SAMPLE_SOLVER)
        options = spec.resolve_options()
        plan = plan_grid(spec, options, denoiser.sigma_min, denoiser.sigma_max, MODEL_SAMPLE_NFE)
        job = Generation(denoiser, spec, options, plan, seed, batch, device, torch.float32)
        samples = generate_sharded(job, range(num_data), distributed.current())
        return samples, f"model samples ({MODEL_SAMPLE_SOLVER}, NFE {MODEL_SAMPLE_NFE}, seed {seed})"
    from diffsampler.data.datasets import load_images, to_model_range

    images = load_images(source)
    if images.shape[0] < num_data:
        raise UserError(f"num_data {num_data} exceeds the {images.shape[0]} images in {source}; lower num_data")
    pick = (
        torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:num_data].sort().values.numpy()
    )
    data = to_model_range(images[pick])
    if tuple(data.shape[1:]) != tuple(denoiser.sample_shape):
        raise UserError(
            f"images in {source} have shape {tuple(data.shape[1:])} but the model takes {tuple(denoiser.sample_shape)}"
        )
    return data, f"{source} ({num_data} of {images.shape[0]}, subset seed {seed})"


def _identity(denoiser: Denoiser, data: str | None, grid: int, num_data: int, batch: int, seed: int) -> dict[str, Any]:
    return {
        "model_sha256": denoiser.describe()["sha256"],
        "sigma_min": denoiser.sigma_min,
        "sigma_max": denoiser.sigma_max,
        "grid": grid,
        "num_data": num_data,
        "batch": batch,
        "seed": seed,
        "data": data,
    }


def check_partial(partial: Path) -> None:
    """Refuse a ``<out>.partial`` that is not an unfinished run of ours (it is deleted when the run completes)."""
    if partial.is_symlink() or (partial.exists() and not partial.is_dir()):
        raise UserError(f"{partial} exists and is not a folder of compute-ems; move it away or choose another --out")
    if partial.is_dir() and not (partial / RUN_FILE).is_file() and any(partial.iterdir()):
        raise UserError(f"{partial} holds files that compute-ems did not write; move it away or choose another --out")


def _open_partial(partial: Path, identity: dict[str, Any]) -> None:
    check_partial(partial)
    run_file = partial / RUN_FILE
    if run_file.exists():
        try:
            same = json.loads(run_file.read_text()) == identity
        except UNREADABLE_FILE as exc:
            log.warning("compute-ems: %s is damaged (%s): the unfinished run starts over", run_file, exc)
            for point in partial.glob("point_*.npy"):
                point.unlink()
        else:
            if not same:
                raise UserError(
                    f"{partial} holds an unfinished run with other settings; delete it or choose another --out"
                )
            return
    ensure_writable_dir(partial)
    atomic_write_bytes(run_file, json.dumps(identity, indent=2).encode())


def remove_partial(partial: Path) -> None:
    """Delete our files of a finished run's partial folder (its run file and grid points), then the folder if that
    leaves it empty: a file a user put there stays."""
    for path in [partial / RUN_FILE, *partial.glob("point_*.npy")]:
        remove_own_file(partial, path.name)
    with contextlib.suppress(OSError):
        partial.rmdir()


def _point_file(partial: Path, index: int) -> Path:
    return partial / f"point_{index:05d}.npy"


def _finished_point(path: Path) -> bool:
    """True when a saved grid point can be read back; a damaged one (a crash, a full disk) is deleted to be redone."""
    if not path.exists():
        return False
    try:
        record = np.load(path)
        if record.dtype.kind != "f" or not np.isfinite(record).all():
            raise ValueError(f"{record.dtype} array with non-finite values")
    except UNREADABLE_FILE as exc:
        log.warning("compute-ems: grid point %s is damaged (%s): computing it again", path, exc)
        path.unlink()
        return False
    return True


def _save_point(path: Path, record: torch.Tensor) -> None:
    buf = io.BytesIO()
    np.save(buf, record.numpy())
    atomic_write_bytes(path, buf.getvalue())


def compute_ems(cfg: EmsConfig, progress: ProgressFn | None = None) -> EmsOutcome:
    """Estimate l, s, b of a registered model on N + 1 = grid + 1 points uniform in lambda over its sigma range."""
    cfg.validate()
    setup = setup_run(cfg.model, cfg.device, model_options=cfg.model_options)
    denoiser, dev = setup.denoiser.eval(), setup.device
    folder = (
        Path(cfg.out)
        if cfg.out
        else default_out(cfg.model, denoiser.sigma_min, denoiser.sigma_max, cfg.grid, cfg.num_data)
    )
    check_path_names(folder)
    check_replaceable(folder, COMMAND)
    check_partial(partial_folder(folder))
    identity = _identity(denoiser, cfg.data, cfg.grid, cfg.num_data, cfg.batch_size, cfg.seed)
    tic = time.perf_counter()
    points, data_note = data_points(denoiser, cfg.data, cfg.num_data, cfg.seed, cfg.batch_size, dev)
    meta = {"model_name": cfg.model, "data": data_note, "data_seconds": time.perf_counter() - tic}
    job = EmsJob(cfg.grid, cfg.batch_size, cfg.seed, folder, dev)
    return estimate_to_folder(denoiser, points, job, meta, identity, progress)


def unusable_reason(stats: dict[str, Any], sigma_min: float, sigma_max: float) -> str:
    """Why DPM-Solver-v3 would refuse these statistics (its integrals overflow), or '' when it accepts them."""
    try:
        EmpiricalStatistics(stats["l"], stats["s"], stats["b"], sigma_min, sigma_max).tables(torch.device("cpu"))
    except UserError as exc:
        return str(exc)
    return ""


def partial_folder(folder: Path) -> Path:
    """Where finished grid points of an unfinished run are kept: `<out>.partial` beside the output."""
    return folder.with_name(folder.name + ".partial")


@dataclass(frozen=True)
class EmsJob:
    """One estimation: N grid intervals, data points per JVP batch, the seed, the output folder and the device."""

    grid: int
    batch: int
    seed: int
    folder: Path
    device: torch.device


def _estimate_points(
    denoiser: Denoiser, points: torch.Tensor, job: EmsJob, lambdas: np.ndarray, progress: ProgressFn | None
) -> int:
    """Estimate every grid point not yet in the partial folder, saving each as it is done; the number resumed."""
    world, partial = distributed.current(), partial_folder(job.folder)
    mine = [j for j in range(job.grid + 1) if not _finished_point(_point_file(partial, j))] if world.is_main else []
    todo: list[int] = distributed.gather_objects(mine, world)[0]  # type: ignore[assignment]
    distributed.barrier(world)
    resumed = finished = job.grid + 1 - len(todo)

    def stopped() -> str:
        return f"compute-ems stopped with {finished} of {job.grid + 1} grid points done, kept in {partial}"

    with resumable(stopped):
        for j in todo:
            sigma = math.exp(-lambdas[j])
            report(progress, finished, job.grid + 1, f"sigma {sigma:.4g}")
            record = point_record(denoiser, points, sigma, point_generator(job.seed, j), job.batch, job.device, world)
            if not torch.isfinite(record).all():
                raise UserError(f"the model returned NaN or infinite values at sigma {sigma:g}; check the model")
            if world.is_main:
                _save_point(_point_file(partial, j), record)
            finished += 1
    report(progress, job.grid + 1, job.grid + 1, "writing the statistics")
    distributed.barrier(world)
    return resumed


def _statistics_meta(
    denoiser: Denoiser, num_data: int, job: EmsJob, lambdas: np.ndarray, stats: dict[str, Any]
) -> dict[str, Any]:
    """What meta.json records about the model, the grid and the estimate (timing and provenance are added)."""
    return {
        "model": denoiser.describe(),
        "sigma_min": denoiser.sigma_min,
        "sigma_max": denoiser.sigma_max,
        "grid": job.grid,
        "num_data": num_data,
        "batch": job.batch,
        "seed": job.seed,
        "lambda_first": float(lambdas[0]),
        "lambda_last": float(lambdas[-1]),
        "ridge": RIDGE,
        "shrunk_elements": stats["shrunk"],
    }


def estimate_to_folder(
    denoiser: Denoiser,
    points: torch.Tensor,
    job: EmsJob,
    extra_meta: dict[str, Any] | None = None,
    identity: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
) -> EmsOutcome:
    """Estimate the statistics of ``denoiser`` from the data ``points`` (K, *sample_shape) into ``job.folder``.

    Under torchrun every grid point's batches are shared by the ranks (``point_record``); rank 0 alone writes.
    """
    world, partial, num_data = distributed.current(), partial_folder(job.folder), int(points.shape[0])
    check_replaceable(job.folder, COMMAND)
    if world.is_main:
        _open_partial(
            partial,
            identity or _identity(denoiser, f"tensor {tuple(points.shape)}", job.grid, num_data, job.batch, job.seed),
        )
    distributed.barrier(world)
    tic = time.perf_counter()
    lambdas = lambda_grid(denoiser.sigma_min, denoiser.sigma_max, job.grid)
    calls = denoiser.calls
    resumed = _estimate_points(denoiser, points, job, lambdas, progress)
    records = np.stack([np.load(_point_file(partial, j)) for j in range(job.grid + 1)])
    stats = statistics_from_records(records, lambdas)
    problem = unusable_reason(stats, denoiser.sigma_min, denoiser.sigma_max)
    if problem:
        log.warning("compute-ems: %s", problem)
    seconds = time.perf_counter() - tic
    meta = {
        **_statistics_meta(denoiser, num_data, job, lambdas, stats),
        "usable": not problem,
        "jvp_calls": int(distributed.all_reduce_sum(torch.tensor([denoiser.calls - calls]), world).item()),
        "seconds": seconds,
        "resumed_points": resumed,
        "device": str(job.device),
        "world_size": world.size,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra_meta or {}),
    }
    if world.is_main:
        with atomic_dir(job.folder, COMMAND) as tmp:
            write_statistics(tmp, stats["l"], stats["s"], stats["b"], meta)
        remove_partial(partial)
    log.debug("compute-ems: %d elements had Var(f) < RIDGE Var(p) (s shrunk toward 0)", stats["shrunk"])
    return EmsOutcome(job.folder, job.grid, num_data, seconds, resumed, stats["shrunk"])
