"""The (solver entry x NFE) cells of a benchmark: each a sigma grid and options, or the reason it cannot run."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from diffsampler.bench.config import LEARNED_SCHEDULES, SolverEntry, at_budget
from diffsampler.errors import UserError
from diffsampler.sampling import GridPlan, plan_grid
from diffsampler.schedule_file import is_schedule_path
from diffsampler.schedules import FlowGrid
from diffsampler.solvers import get_solver

AUTO_AFS_NOTE = (
    "afs=true was set automatically: a 2-NFE-per-step solver meets an odd budget with the analytical first step "
    "(as the AMED paper, arXiv 2312.00094, does for its odd NFE); set "
    "afs in the solver's options or auto_afs: false to turn this off"
)


@dataclass(frozen=True)
class Cell:
    """One table cell: an entry at a budget, with its grid and effective options, or why it is n/a."""

    entry: SolverEntry
    nfe: int
    options: dict[str, Any]
    plan: GridPlan | None
    auto_afs: bool = False
    reason: str | None = None

    @property
    def runnable(self) -> bool:
        return self.plan is not None


def options_at_budget(options: dict[str, Any], nfe: int) -> dict[str, Any]:
    """``options`` with every NFE_PLACEHOLDER in a string value replaced by ``nfe``."""
    return {k: at_budget(v, nfe) if isinstance(v, str) else v for k, v in options.items()}


LearnedSchedule = Callable[[SolverEntry, int, dict[str, Any]], str]
"""(entry, nfe, options) -> the path of the schedule file searched (or cached) for a learned schedule."""


def _plan(
    entry: SolverEntry,
    nfe: int,
    options: dict[str, Any],
    sigma_min: float,
    sigma_max: float,
    learned: LearnedSchedule | None,
    flow_grid: FlowGrid | None = None,
) -> GridPlan:
    """plan_grid for the entry; a learned schedule is searched first, a schedule file must cost exactly ``nfe``."""
    spec = get_solver(entry.solver)
    schedule = at_budget(entry.schedule, nfe) if entry.schedule else None
    if schedule in LEARNED_SCHEDULES:
        if learned is None:
            raise UserError(
                f"the '{schedule}' schedule is searched per NFE and needs the model (the benchmark runner does this)"
            )
        spec.steps_for_nfe(nfe, options)
        schedule = learned(entry, nfe, options)
    budget = None if is_schedule_path(schedule) else nfe
    plan = plan_grid(spec, options, sigma_min, sigma_max, budget, schedule, entry.rho, flow_grid=flow_grid)
    if plan.nfe != nfe:
        raise UserError(f"the schedule file {schedule} costs {spec.name} NFE {plan.nfe}; it fills only that column")
    return replace(plan, schedule=entry.schedule) if entry.schedule in LEARNED_SCHEDULES else plan


def plan_cell(
    entry: SolverEntry,
    nfe: int,
    sigma_min: float,
    sigma_max: float,
    auto_afs: bool,
    learned: LearnedSchedule | None = None,
    flow_grid: FlowGrid | None = None,
) -> Cell:
    """The grid of ``entry`` at ``nfe``; with ``auto_afs`` an odd budget may switch on AFS (never rounds NFE).
    ``flow_grid``: a flow model's own grid settings, for the ``flow`` schedule."""
    spec = get_solver(entry.solver)
    options = spec.resolve_options(options_at_budget(entry.options, nfe))
    try:
        return Cell(entry, nfe, options, _plan(entry, nfe, options, sigma_min, sigma_max, learned, flow_grid))
    except UserError as exc:
        reason = str(exc)
    if auto_afs and not entry.explicit_afs and not options["afs"]:
        with_afs = {**options, "afs": True}
        try:
            return Cell(
                entry,
                nfe,
                with_afs,
                _plan(entry, nfe, with_afs, sigma_min, sigma_max, learned, flow_grid),
                auto_afs=True,
            )
        except UserError:
            pass
    return Cell(entry, nfe, options, None, reason=reason)


def plan_cells(
    entries: list[SolverEntry],
    budgets: list[int],
    sigma_min: float,
    sigma_max: float,
    auto_afs: bool,
    learned: LearnedSchedule | None = None,
    flow_grid: FlowGrid | None = None,
) -> list[Cell]:
    """Every (entry, budget) cell, row by row."""
    return [
        plan_cell(entry, nfe, sigma_min, sigma_max, auto_afs, learned, flow_grid)
        for entry in entries
        for nfe in budgets
    ]
