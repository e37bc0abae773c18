"""Prepare hooks: load and check the artefacts a solver requires before it runs.

Solvers (``diffsampler.solvers``) are pure step math and name the options they require (``SolverSpec.requires``);
the code that loads those artefacts lives with whatever makes them: AMED predictors in
``diffsampler.amed.checkpoint``, DPM-Solver-v3 statistics in ``diffsampler.ems.format``. This module joins the two
(a registry: one dict, one function), so that ``solvers`` imports neither.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from diffsampler.amed.checkpoint import prepare_amed, prepare_amed_plugin
from diffsampler.ems.format import prepare_statistics
from diffsampler.errors import UserError
from diffsampler.solvers import SolverSpec

PrepareFn = Callable[[dict[str, Any], Mapping[str, Any]], dict[str, Any]]
"""(options, context) -> options: loads artefacts named in options (predictor or statistics files) and
checks them against the context {"model": describe() of the model, "nfe", "schedule", "sigmas"}."""

PREPARE_HOOKS: dict[str, PrepareFn] = {
    "amed": prepare_amed,
    "amed-plugin": prepare_amed_plugin,
    "dpm-solver-v3": prepare_statistics,
}
"""Solver name -> the hook that loads what it requires."""


def prepare_options(spec: SolverSpec, options: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Options with the solver's required artefacts checked and loaded by its hook (unchanged when it has none)."""
    opts = dict(options)
    missing = [key for key in spec.requires if opts.get(key) is None]
    if missing:
        raise UserError(f"solver '{spec.name}' needs the option(s) {', '.join(missing)} (e.g. -o {missing[0]}=PATH)")
    hook = PREPARE_HOOKS.get(spec.name)
    return opts if hook is None else hook(opts, context)
