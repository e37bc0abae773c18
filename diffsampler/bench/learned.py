"""Learned schedules in a benchmark: search (or reuse from the cache) a GITS / LD3 grid per entry and NFE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from diffsampler.bench.config import SolverEntry, at_budget
from diffsampler.bench.plan import LearnedSchedule
from diffsampler.config import RunSettings, build_config
from diffsampler.errors import UserError
from diffsampler.models import Denoiser
from diffsampler.progress import ProgressFn, report
from diffsampler.schedule_file import is_schedule_path, warn_other_model
from diffsampler.search.run import SearchConfig, cached_schedule


def learned_schedules(
    model: str, denoiser: Denoiser, device: torch.device, run: RunSettings, folder: Path, progress: ProgressFn | None
) -> LearnedSchedule:
    """The resolver plan_cells calls for entries with ``schedule: gits`` or ``ld3``.

    The search runs on the benchmark's device and dtype unless the entry's ``search`` settings say otherwise,
    and always with the benchmark's network precision (the loaded model's); its file is cached in ``folder``
    under a key of model hash, solver, options, NFE and settings.
    """

    def resolve(entry: SolverEntry, nfe: int, options: dict[str, Any]) -> str:
        values = {
            "model": model,
            "method": entry.schedule,
            "solver": entry.solver,
            "options": options,
            "nfe": nfe,
            "device": device.type,
            "dtype": run.dtype,
            **(entry.search or {}),
        }
        if values.setdefault("precision", run.precision) != run.precision:
            raise UserError(
                f"search settings of '{entry.label}': the search runs the benchmark's network, in its precision "
                f"{run.precision}; remove precision {values['precision']} or set it for the whole benchmark"
            )
        cfg = build_config(SearchConfig, values, f"search settings of '{entry.label}'")
        report(
            progress, 0, None, f"{entry.schedule} schedule for {entry.label} at NFE {nfe} (searched once, then cached)"
        )
        return str(cached_schedule(cfg, denoiser, folder))

    return resolve


def warn_schedule_files(entries: list[SolverEntry], budgets: list[int], denoiser: Denoiser) -> None:
    """One warning line for each schedule file (per budget where its path names one per NFE) made for another
    model; files that are missing are left to the cells, which report them n/a."""
    for entry in entries:
        if not is_schedule_path(entry.schedule):
            continue
        paths = dict.fromkeys(at_budget(str(entry.schedule), nfe) for nfe in budgets)
        for path in paths:
            if Path(path).is_file():
                warn_other_model(path, denoiser.content_hash(), entry.solver)
