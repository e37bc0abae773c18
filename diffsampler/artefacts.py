"""Prepare hooks: load and check the artefacts a solver requires before it runs.

Solvers (``diffsampler.solvers``) are pure step math and name the options they require (``SolverSpec.requires``);
the code that loads those artefacts lives with whatever makes them: AMED predictors in
``diffsampler.amed.checkpoint``, DPM-Solver-v3 statistics in ``diffsampler.ems.format``. They register their hooks
here as plugins of the group ``diffsampler.solvers`` (``diffsampler.plugins``), the way an installed package's
solver brings its own loader, so neither ``solvers`` nor this module imports the engines.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from diffsampler.errors import UserError
from diffsampler.solvers import SolverSpec, load_plugins

PrepareFn = Callable[[dict[str, Any], Mapping[str, Any]], dict[str, Any]]
"""(options, context) -> options: loads artefacts named in options (predictor or statistics files) and
checks them against the context {"model": describe() of the model, "nfe", "schedule", "sigmas"}."""

PREPARE_HOOKS: dict[str, PrepareFn] = {}
"""Solver name -> the hook that loads what it requires (filled by the plugins of ``diffsampler.solvers``)."""


def register_prepare_hook(solver: str, hook: PrepareFn) -> None:
    """Make ``hook`` load and check the artefacts of ``solver`` before it runs."""
    PREPARE_HOOKS[solver] = hook


def prepare_hook(solver: str) -> PrepareFn | None:
    """The hook of ``solver``, or None when it needs none (the solver plugins are loaded first)."""
    load_plugins()
    return PREPARE_HOOKS.get(solver)


ReadFn = Callable[[Mapping[str, Any]], object]
"""(options) -> anything: reads the artefact files named in options alone, a UserError when one cannot be read."""

READERS: dict[str, ReadFn] = {}
"""Solver name -> a reader of its artefact file alone (run before the grid is planned), so that a missing or
damaged file is reported as such rather than as a mismatch with the request (filled like ``PREPARE_HOOKS``)."""


def register_artefact_reader(solver: str, reader: ReadFn) -> None:
    """Make ``reader`` check that the artefact files of ``solver`` can be read, before any planning."""
    READERS[solver] = reader


def _check_required(spec: SolverSpec, options: Mapping[str, Any]) -> None:
    missing = [key for key in spec.requires if options.get(key) is None]
    if missing:
        raise UserError(f"solver '{spec.name}' needs the option(s) {', '.join(missing)} (e.g. -o {missing[0]}=PATH)")


def read_artefacts(spec: SolverSpec, options: Mapping[str, Any]) -> None:
    """Refuse (one line) missing artefact options or an artefact file that cannot be read, before any planning."""
    _check_required(spec, options)
    load_plugins()
    reader = READERS.get(spec.name)
    if reader is not None:
        reader(options)


def prepare_options(spec: SolverSpec, options: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Options with the solver's required artefacts checked and loaded by its hook (unchanged when it has none)."""
    opts = dict(options)
    _check_required(spec, opts)
    hook = prepare_hook(spec.name)
    return opts if hook is None else hook(opts, context)
