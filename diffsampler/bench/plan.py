"""The (solver entry x NFE) cells of a benchmark: each a sigma grid and options, or the reason it cannot run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffsampler.bench.config import SolverEntry
from diffsampler.errors import UserError
from diffsampler.sampling import GridPlan, plan_grid
from diffsampler.solvers import get_solver

AUTO_AFS_NOTE = (
    "afs=true was set automatically: a 2-NFE-per-step solver meets an odd budget with the analytical first step "
    "(as the AMED paper, arXiv 2312.00094, does for its odd NFE); set " "afs in the solver's options or auto_afs: false to turn this off"
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


def plan_cell(entry: SolverEntry, nfe: int, sigma_min: float, sigma_max: float, auto_afs: bool) -> Cell:
    """The grid of ``entry`` at ``nfe``; with ``auto_afs`` an odd budget may switch on AFS (never rounds NFE)."""
    spec = get_solver(entry.solver)
    options = spec.resolve_options(entry.options)
    try:
        plan = plan_grid(spec, options, sigma_min, sigma_max, nfe, entry.schedule, entry.rho)
        return Cell(entry, nfe, options, plan)
    except UserError as exc:
        reason = str(exc)
    if auto_afs and not entry.explicit_afs and not options["afs"]:
        with_afs = {**options, "afs": True}
        try:
            plan = plan_grid(spec, with_afs, sigma_min, sigma_max, nfe, entry.schedule, entry.rho)
            return Cell(entry, nfe, with_afs, plan, auto_afs=True)
        except UserError:
            pass
    return Cell(entry, nfe, options, None, reason=reason)


def plan_cells(entries: list[SolverEntry], budgets: list[int], sigma_min: float, sigma_max: float, auto_afs: bool) -> list[Cell]:
    """Every (entry, budget) cell, row by row."""
    return [plan_cell(entry, nfe, sigma_min, sigma_max, auto_afs) for entry in entries for nfe in budgets]
