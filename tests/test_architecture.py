"""The package's structure: imports flow one way (no cycles), solvers are pure math, only the CLI draws.

The import graph is read from the source with ``ast`` (every ``import``, also those inside functions, so a
cycle cannot hide behind a deferred import); nothing is imported to build it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "diffsampler"

SOLVER_FORBIDDEN = (
    "diffsampler.amed",
    "diffsampler.ems",
    "diffsampler.bench",
    "diffsampler.models",
    "diffsampler.sampling",
)
"""What ``diffsampler.solvers`` must not import: solvers take any callable D(x, sigma) and plain options."""
ENGINES = (
    "diffsampler.bench",
    "diffsampler.amed",
    "diffsampler.ems",
    "diffsampler.train",
    "diffsampler.search",
    "diffsampler.cli",
    "diffsampler.terminal",
)
"""The engines and the CLI. Nothing below them (``sampling``, ``artefacts``, ``plugins``, ``solvers``, ``models``,
``metrics``, ``data``, the base modules) imports them: the artefact loaders of AMED and DPM-Solver-v3 register
themselves as built-in plugins (``diffsampler.plugins.BUILTIN``) instead of being imported by ``artefacts``."""
ENGINE_USERS = {"diffsampler.__main__", "diffsampler.api"}
"""Modules above the engines besides the engines themselves (``python -m diffsampler`` runs the CLI; the Python
API runs the benchmark engine)."""
RICH_ALLOWED = {"diffsampler.cli", "diffsampler.terminal"}
"""The CLI layer: the only modules that may import rich (engines report progress through callbacks)."""
API = "diffsampler.api"
API_USERS = {"diffsampler", "diffsampler.cli"}
"""The Python API is the top layer beside the CLI: the package root re-exports it (``import diffsampler as ds;
ds.sample``) and holds ``__version__``, which every layer reads. So the root's edge to the API is left out of the
cycle check (the API imports the engines inside its functions only), and nothing below the top may import the API."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_names(path: Path) -> set[str]:
    """Every absolute module name an import statement in the file names (``from a import b`` gives a and a.b)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            if node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def package_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (a name that is not a module counts as its package)."""
    modules = all_modules()
    graph = {name: {n for n in imported_names(path) if n in modules and n != name} for name, path in modules.items()}
    graph["diffsampler"].discard(API)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None; depth-first search with colours."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_walk_sees_known_edges():
    """The graph is not empty by mistake: edges that must exist are found (also a deferred one in a function)."""
    graph = package_graph()
    assert "diffsampler.solvers.base" in graph["diffsampler.solvers.runge_kutta"]
    assert "diffsampler.bench.runner" in graph["diffsampler.cli"]  # imported inside the `benchmark` command
    assert "diffsampler.distributed" in graph["diffsampler.sampling"]  # `from diffsampler import distributed`


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycles():
    cycle = find_cycle(package_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("name", [n for n in all_modules() if n.startswith("diffsampler.solvers")])
def test_solvers_import_no_higher_layer(name):
    bad = sorted(n for n in imported_names(all_modules()[name]) if n.startswith(SOLVER_FORBIDDEN))
    assert not bad, f"{name} imports {bad}"


def test_nothing_below_the_engines_imports_them():
    graph = package_graph()
    assert "diffsampler.artefacts" in graph["diffsampler.sampling"]  # the layer the two removed arrows started in
    lower = [name for name in graph if not name.startswith(ENGINES) and name not in ENGINE_USERS]
    bad = {name: sorted(n for n in graph[name] if n.startswith(ENGINES)) for name in lower}
    assert not {name: deps for name, deps in bad.items() if deps}, bad


def test_the_check_sees_an_engine_import(tmp_path):
    """The rule above can fail: an artefacts.py importing diffsampler.amed (as it once did) is seen."""
    source = tmp_path / "artefacts.py"
    source.write_text("from diffsampler.amed.checkpoint import prepare_amed\n")
    assert any(n.startswith(ENGINES) for n in imported_names(source))


def test_only_the_cli_layer_imports_rich():
    users = {
        name for name, path in all_modules().items() if any(n.split(".")[0] == "rich" for n in imported_names(path))
    }
    assert "diffsampler.cli" in users  # the check sees rich imports at all
    assert users <= RICH_ALLOWED, f"rich imported outside the CLI layer by {sorted(users - RICH_ALLOWED)}"


def test_only_the_top_layer_imports_the_api():
    users = {name for name, path in all_modules().items() if API in imported_names(path)}
    assert "diffsampler" in users  # the root re-exports it: the check sees the import
    assert users <= API_USERS, f"the Python API is imported from below the top by {sorted(users - API_USERS)}"


def test_the_api_imports_no_engine_at_module_level():
    """``import diffsampler`` imports the API, so its module level may import nothing heavy (the CLI's startup)."""
    tree = ast.parse(all_modules()[API].read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
    assert names <= {"__future__", "dataclasses", "typing"}, names
