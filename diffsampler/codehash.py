"""Which source files of the package a benchmark result depends on, and one hash of them.

A cell's result depends on its solver's module and every diffsampler module that module imports,
directly or inside a function (found statically with ``ast``, so nothing is imported), plus the code
every cell shares (grid planning, latents, schedules, generation) and the model code; a plugin's solver (defined
outside the package) adds its own source file. Package
``__init__`` files and ``diffsampler.artefacts`` are registries (solvers, models, prepare hooks): they
are hashed, but their imports are not followed, or every solver would depend on every other one. What
a cell takes from a registry is hashed as a root of its own (the solver's module and its prepare hook;
the whole models package).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import textwrap
from pathlib import Path
from typing import Iterable

import diffsampler

PACKAGE = "diffsampler"
PACKAGE_ROOT = Path(diffsampler.__file__).resolve().parent
SHARED = (
    "diffsampler.sampling",
    "diffsampler.latents",
    "diffsampler.schedules",
    "diffsampler.bench.plan",
    "diffsampler.solvers",
)
"""Modules every cell's samples go through."""
REGISTRIES = frozenset({"diffsampler.artefacts"})
"""Modules besides package ``__init__`` files whose imports are not followed (each entry is hashed as a root)."""


def module_file(name: str, root: Path | None = None) -> Path | None:
    """The source file of the diffsampler module ``name`` under ``root`` (a package's ``__init__.py``), or None."""
    root = root or PACKAGE_ROOT
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = root.joinpath(*name.split(".")[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(path: Path, name: str, root: Path) -> set[str]:
    """Names of the diffsampler modules ``path`` (module ``name``) imports anywhere in its code."""
    stat = path.stat()
    return _imported_cached(path, stat.st_mtime_ns, stat.st_size, name, root)


@functools.lru_cache(maxsize=4096)
def _imported_cached(path: Path, mtime_ns: int, size: int, name: str, root: Path) -> frozenset[str]:
    """``_imported`` for one version of a file (keyed by its modification time and size: parsing is the slow part)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return frozenset(_imports_of(ast.parse(path.read_bytes(), str(path)), package, root))


def _imports_of(tree: ast.AST, package: str, root: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            origin = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            source = ".".join(p for p in (origin, node.module or "") if p)
            found.add(source)
            found.update(
                f"{source}.{alias.name}" for alias in node.names if module_file(f"{source}.{alias.name}", root)
            )
    return {n for n in found if module_file(n, root) is not None}


def closure(roots: Iterable[str], root: Path | None = None) -> list[Path]:
    """The files of ``roots`` and of every module they reach by imports (not followed out of registries)."""
    root = root or PACKAGE_ROOT
    todo, seen, files = list(roots), set(), set()
    while todo:
        name = todo.pop()
        path = module_file(name, root)
        if name in seen or path is None:
            continue
        seen.add(name)
        files.add(path)
        if path.name != "__init__.py" and name not in REGISTRIES:
            todo.extend(_imported(path, name, root))
    return sorted(files)


def package_modules(package: str, root: Path | None = None) -> list[str]:
    """Every module of a subpackage (e.g. all model code), as names."""
    root = root or PACKAGE_ROOT
    folder = module_file(package, root)
    assert folder is not None, package
    return [f"{package}.{p.stem}" if p.stem != "__init__" else package for p in sorted(folder.parent.glob("*.py"))]


def code_hash(roots: Iterable[str], root: Path | None = None) -> str:
    """sha256 (12 hex digits) of the paths and bytes of ``closure(roots)``."""
    root = root or PACKAGE_ROOT
    digest = hashlib.sha256()
    for path in closure(list(roots), root):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def module_of(fn: object) -> str:
    """The module name a function or class was defined in."""
    return str(getattr(fn, "__module__", PACKAGE))


def function_imports(fn: object, root: Path | None = None) -> set[str]:
    """The diffsampler modules a function imports in its own body (a registry's hook importing lazily)."""
    root = root or PACKAGE_ROOT
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))  # type: ignore[arg-type]
    except (OSError, TypeError):
        return set()
    return _imports_of(tree, module_of(fn).rpartition(".")[0], root)


def solver_code(sample_fn: object, prepare: object | None = None, root: Path | None = None) -> str:
    """The hash of what a solver cell's samples depend on: its solver (and prepare hook), shared code, model code."""
    root = root or PACKAGE_ROOT
    roots = [module_of(sample_fn), *SHARED, *package_modules("diffsampler.models", root)]
    if prepare is not None:
        roots += [module_of(prepare), *function_imports(prepare, root)]
    digest = code_hash(roots, root)
    foreign = [path for path in map(foreign_file, (sample_fn, prepare)) if path is not None]
    if not foreign:
        return digest
    return hashlib.sha256(b"\0".join([digest.encode(), *(p.read_bytes() for p in foreign)])).hexdigest()[:12]


def foreign_file(fn: object) -> Path | None:
    """The source file of a function defined outside diffsampler (a plugin's solver or hook), or None."""
    if fn is None or module_of(fn).split(".")[0] == PACKAGE:
        return None
    try:
        source = inspect.getsourcefile(fn)  # type: ignore[arg-type]
    except TypeError:
        return None
    return Path(source) if source else None


def metric_code(*functions: object, root: Path | None = None) -> str:
    """The hash of what a metric's values depend on: the modules of its functions and what they import."""
    return code_hash([module_of(fn) for fn in functions if fn is not None], root)
