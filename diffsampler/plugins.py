"""Plugins: packages that add solvers, metrics, models or schedules through entry points.

The contract (docs/extending.md): a distribution declares an entry point in one of the groups of ``GROUPS``,
for example in its pyproject.toml::

    [project.entry-points."diffsampler.solvers"]
    ralston = "my_package.solver:register"

The entry point names a callable taking no arguments. Called once, it adds its entries to the same registry
dicts the built-ins live in, through the public functions (``diffsampler.solvers.register_solver`` and
``diffsampler.artefacts.register_prepare_hook``, ``diffsampler.bench.metric_registry.register_metric``,
``diffsampler.models.register_model``, ``diffsampler.schedules.register_schedule``). A group is loaded lazily
and once per process, when its registry is first looked up or listed (``load_group``). The names it adds are
recorded with the distribution that shipped them (``plugin_package``), so ``diffsampler list`` can mark them.

A plugin that fails (raises on import or when called, names something that is not callable, adds nothing to
its group's registry or replaces an entry already there) is skipped with one ``PluginWarning`` naming it and its
package; whatever it had added is removed again, and everything else works. The built-in AMED and DPM-Solver-v3
artefact loaders enter by the same mechanism (``BUILTIN``), so this base module and the layers below the engines
import none of them.
"""

from __future__ import annotations

import warnings
from importlib.metadata import EntryPoint, entry_points
from typing import Any, MutableMapping

GROUPS = ("diffsampler.solvers", "diffsampler.metrics", "diffsampler.models", "diffsampler.schedules")
BUILTIN_PACKAGE = "diffsampler"
BUILTIN: dict[str, tuple[EntryPoint, ...]] = {
    "diffsampler.solvers": (
        EntryPoint("amed", "diffsampler.amed.checkpoint:register_plugin", "diffsampler.solvers"),
        EntryPoint("dpm-solver-v3", "diffsampler.ems.format:register_plugin", "diffsampler.solvers"),
    ),
}
"""Entry points of diffsampler itself, loaded like an installed package's (declared here rather than in
pyproject.toml, so an editable install never serves stale metadata)."""

_loaded: set[str] = set()
_sources: dict[tuple[str, str], str] = {}


class PluginWarning(UserWarning):
    """A plugin could not be loaded; it is skipped (the message names it and its package)."""


def _installed(group: str) -> list[tuple[EntryPoint, str]]:
    """(entry point, distribution name) of every installed plugin of the group, in a stable order."""
    found = [(ep, ep.dist.name if ep.dist is not None else "unknown package") for ep in entry_points(group=group)]
    return sorted(found, key=lambda item: (item[1], item[0].name))


def _load_one(ep: EntryPoint, package: str, group: str, registry: MutableMapping[str, Any]) -> list[str]:
    """Call one plugin's register function; the names it added to ``registry`` (rolled back if it fails)."""
    before = dict(registry)
    try:
        register = ep.load()
        if not callable(register):
            raise TypeError(f"{ep.value} is a {type(register).__name__}, not a register function")
        register()
        replaced = [name for name in before if registry.get(name) is not before[name]]
        if replaced:
            raise TypeError(f"it registers {', '.join(map(repr, replaced))}, which exists already")
        added = [name for name in registry if name not in before]
        if not added and package != BUILTIN_PACKAGE:
            raise TypeError(f"calling {ep.value} registered nothing in {group}")
        return added
    except Exception as exc:  # noqa: BLE001 - any failure of foreign code is reported and skipped
        registry.clear()
        registry.update(before)
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        warnings.warn(
            f"plugin '{ep.name}' of package {package} ({group}) skipped: {message}", PluginWarning, stacklevel=2
        )
        return []


def load_group(group: str, registry: MutableMapping[str, Any]) -> None:
    """Load the built-in and installed plugins of ``group`` into ``registry``, once per process."""
    if group in _loaded:
        return
    _loaded.add(group)  # first, so that a plugin looking up its own registry does not load the group again
    plugins = [(ep, BUILTIN_PACKAGE) for ep in BUILTIN.get(group, ())] + _installed(group)
    for ep, package in plugins:
        for name in _load_one(ep, package, group, registry):
            _sources[(group, name)] = package


def plugin_package(group: str, name: str) -> str | None:
    """The distribution that added ``name`` to ``group``'s registry, or None for a built-in entry."""
    package = _sources.get((group, name))
    return None if package == BUILTIN_PACKAGE else package


__all__ = ["GROUPS", "PluginWarning", "load_group", "plugin_package"]
