"""The benchmark's config (YAML under configs/benchmark/ or command-line options) and its solver entries."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from diffsampler.atomic import check_name
from diffsampler.config import RunSettings, build_config, check_nfe, check_samples, config_values, run_settings
from diffsampler.errors import UserError, shorten, unknown_choice
from diffsampler.schedule_file import is_schedule_path, read_schedule
from diffsampler.schedules import SCHEDULES
from diffsampler.schedules import load_plugins as load_schedule_plugins
from diffsampler.solvers import SOLVERS, get_solver, is_solver, load_plugins

DEFAULT_NFE = [3, 5, 7, 9]
NFE_PLACEHOLDER = "{nfe}"
"""In a string option or a schedule file path it stands for the cell's budget: one entry can name a predictor or
a schedule file per NFE (a budget whose file is missing is n/a)."""
ENTRY_KEYS = ("solver", "label", "options", "schedule", "rho", "search")
LEARNED_SCHEDULES = ("gits", "ld3")
"""Schedules searched per NFE for the entry's solver (``diffsampler.search``), cached by model hash and settings."""


def at_budget(text: str, nfe: int) -> str:
    """``text`` with every NFE_PLACEHOLDER replaced by the cell's budget ``nfe``."""
    return text.replace(NFE_PLACEHOLDER, str(nfe))


@dataclass
class BenchmarkConfig:
    """``diffsampler benchmark``: one model, a list of solver entries, NFE budgets and metrics.

    ``solvers`` items are a solver name or a mapping {solver, label, options, schedule, rho}; None means
    every registered training-free solver with its defaults. ``metrics`` None means the default metrics
    the model supports (``runner.default_metrics``). The defaults make the quick start
    (``diffsampler benchmark --nfe 5``): the shipped fmnist-p1 U-Net, in bf16 where the device runs it natively, on
    ``num_samples`` 64 per cell (issue 36: its NFE-5 fd_fmnist ranking of the ten training-free solvers has Spearman
    0.90 against the 5,000-sample reference table, scripts/quick_start_ranking.py; 256 took 254 s in float32 on a
    2-core AVX2 CPU).
    ``auto_afs`` lets a 2-NFE-per-step solver meet an odd budget with afs=true
    when its entry does not set afs itself. ``converged`` names the folder of another run on the same model, seed
    and number of samples (one solver at a high NFE): its value at its highest NFE is drawn as each metric's
    converged line in the plots (``diffsampler.bench.converged``).
    """

    model: str = "fmnist-p1"
    solvers: list[Any] | None = None
    nfe: list[int] = field(default_factory=lambda: list(DEFAULT_NFE))
    metrics: list[str] | None = None
    metric_options: dict[str, Any] = field(default_factory=dict)
    primary_metric: str | None = None
    """The metric the recommendation ranks by; None: the first metric of the run (``bench.recommend``)."""
    num_samples: int = 64
    run: RunSettings = run_settings(precision="auto")
    sigma_min: float | None = None
    sigma_max: float | None = None
    auto_afs: bool = True
    converged: str | None = None
    name: str | None = None
    out: str = "results"
    model_options: dict[str, Any] = field(default_factory=dict)
    """Options of the model: keywords for a python: model's NAME, and the toolbox's own (prediction, shape, ...)."""

    def validate(self) -> None:
        if not self.nfe:
            raise UserError("the NFE list is empty; give budgets such as --nfe 3,5,7,9 or --nfe 3-10")
        bad = [n for n in self.nfe if n < 1]
        if bad:
            raise UserError(f"NFE budgets must be at least 1, got {bad[0]}")
        check_nfe(max(self.nfe), "the largest NFE budget")
        if self.num_samples < 2:
            raise UserError(f"num_samples must be at least 2, got {self.num_samples}")
        check_samples(self.num_samples)
        self.run.validate()
        if self.metrics is not None and not self.metrics:
            raise UserError("the metric list is empty; name at least one metric or leave it out for the defaults")
        if self.solvers is not None and not self.solvers:
            raise UserError(
                "the solver list is empty; name at least one solver or leave it out for all training-free ones"
            )
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise UserError(f"run name {shorten(self.name)} must be letters, digits, '.', '_' or '-'")
        if self.name is not None:
            check_name(self.name)


@dataclass(frozen=True)
class SolverEntry:
    """One row of the table: a solver with its options and schedule, under a readable label."""

    label: str
    solver: str
    options: dict[str, Any]
    schedule: str | None
    rho: float | None
    explicit_afs: bool
    search: dict[str, Any] | None = None

    def definition(self) -> dict[str, Any]:
        """What the label stands for (compared with earlier records of the same run)."""
        extra = {"search": self.search} if self.search else {}
        return {"solver": self.solver, "options": self.options, "schedule": self.schedule, "rho": self.rho, **extra}


def parse_nfe(text: str) -> list[int]:
    """'3,5,7,9', '3-10' or a mix such as '3-5,8' -> sorted unique budgets."""
    budgets: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = re.fullmatch(r"(-?\d+)(?:-(-?\d+))?", part)
        if match is None:
            raise UserError(f"--nfe takes budgets like 3,5,7,9 or 3-10, got {shorten(text)}")
        lo, hi = int(match.group(1)), int(match.group(2) or match.group(1))
        if hi < lo:
            raise UserError(f"the NFE range '{part}' is empty; write it low-high, e.g. 3-10")
        check_nfe(hi, "the largest NFE budget")
        budgets.update(range(lo, hi + 1))
    return sorted(budgets)


def _default_label(solver: str, options: Mapping[str, Any], schedule: str | None, rho: float | None) -> str:
    parts = [solver, *(f"{k}={v}" for k, v in options.items())]
    if schedule is not None:
        parts.append(f"@{schedule}" + (f"(rho={rho:g})" if rho is not None else ""))
    elif rho is not None:
        parts.append(f"rho={rho:g}")
    return " ".join(parts)


def _entry(item: Any) -> SolverEntry:
    if isinstance(item, str):
        item = {"solver": item}
    if not isinstance(item, Mapping):
        raise UserError(
            f"each item of 'solvers' must be a solver name or a mapping with a 'solver' key, got {shorten(item)}"
        )
    for key in item:
        if key not in ENTRY_KEYS:
            raise unknown_choice("key in a solvers item", str(key), ENTRY_KEYS)
    if "solver" not in item:
        raise UserError(f"the solvers item {dict(item)} has no 'solver' key")
    spec = get_solver(str(item["solver"]))
    options = item.get("options") or {}
    if not isinstance(options, Mapping):
        raise UserError(f"'options' of solver '{spec.name}' must be a mapping, got {shorten(options)}")
    resolved = spec.resolve_options(options)
    missing = [key for key in spec.requires if resolved.get(key) is None]
    if missing:
        raise UserError(
            f"solver '{spec.name}' needs the option(s) {', '.join(missing)} "
            f"in its solvers item (options: {{{missing[0]}: PATH}})"
        )
    schedule = item.get("schedule")
    load_schedule_plugins()
    if isinstance(schedule, str) and is_schedule_path(schedule):
        if NFE_PLACEHOLDER not in schedule:
            read_schedule(schedule)
    elif schedule is not None and schedule not in SCHEDULES and schedule not in LEARNED_SCHEDULES:
        raise unknown_choice("schedule", str(schedule), [*SCHEDULES, *LEARNED_SCHEDULES, "PATH.json"])
    search = item.get("search")
    if search is not None and (schedule not in LEARNED_SCHEDULES or not isinstance(search, Mapping)):
        raise UserError(
            f"'search' of solver '{spec.name}' must be a mapping of search settings and needs schedule gits or ld3"
        )
    rho = item.get("rho")
    if rho is not None and (isinstance(rho, bool) or not isinstance(rho, (int, float)) or rho <= 0):
        raise UserError(f"'rho' of solver '{spec.name}' must be a positive number, got {shorten(rho)}")
    rho = None if rho is None else float(rho)
    label = str(item.get("label") or _default_label(spec.name, options, schedule, rho))
    return SolverEntry(
        label, spec.name, dict(options), schedule, rho, "afs" in options, dict(search) if search else None
    )


def solver_entries(items: list[Any] | None) -> list[SolverEntry]:
    """The validated entries; None means every registered training-free solver (read at run time)."""
    if items is None:
        load_plugins()
        items = [name for name, spec in SOLVERS.items() if spec.training_free]
    entries = [_entry(item) for item in items]
    seen: set[str] = set()
    for entry in entries:
        if entry.label in seen:
            raise UserError(f"the solver label '{entry.label}' appears twice; give each solvers item its own 'label'")
        seen.add(entry.label)
    return entries


def select_solvers(config_items: list[Any] | None, names: list[str]) -> list[Any]:
    """``--solvers``: labels of the config's entries, else registered solver names with their defaults."""
    by_label = (
        {entry.label: item for entry, item in zip(solver_entries(config_items), config_items or [])}
        if config_items
        else {}
    )
    chosen: list[Any] = []
    for name in names:
        if name in by_label:
            chosen.append(by_label[name])
        elif is_solver(name):
            chosen.append(name)
        else:
            raise unknown_choice("solver", name, [*by_label, *SOLVERS])
    return chosen


def benchmark_config(
    path: str | Path | None,
    overrides: Mapping[str, Any],
    solver_names: list[str] | None = None,
    sets: list[str] | None = None,
) -> BenchmarkConfig:
    """The config file (if any) with ``--set`` items, the non-None flags ``overrides`` and ``--solvers`` applied."""
    values = config_values(BenchmarkConfig, path, sets)
    if solver_names is not None:
        file_solvers = values.get("solvers")
        if file_solvers is not None and not isinstance(file_solvers, list):
            raise UserError(f"config key 'solvers' must be a list, got {shorten(file_solvers)}")
        values["solvers"] = select_solvers(file_solvers, solver_names)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return build_config(BenchmarkConfig, values, str(path) if path is not None else "--set")
