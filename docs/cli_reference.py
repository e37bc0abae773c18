"""What the CLI offers, read from the Typer app itself: commands, their options and their config keys.

Used by the MkDocs hook (the option tables of docs/commands/*.md are generated, so they cannot drift) and by
tests/test_docs_names.py (every command, option and config key a page names must exist). Not part of the package.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from typing import Any

import typer


@dataclass
class CommandInfo:
    """One command: its click object, its option strings and its config keys with their defaults."""

    name: str
    command: Any  # a click (or typer's vendored click) Command
    options: set[str] = field(default_factory=set)
    keys: dict[str, Any] = field(default_factory=dict)


def _config_keys(command: Any) -> dict[str, Any]:
    target = getattr(command, "config_target", None)
    if target is None:
        return {}
    from diffsampler.config import flat_dict

    module, _, name = target.partition(":")
    return flat_dict(getattr(importlib.import_module(module), name)())


@functools.lru_cache(maxsize=1)
def cli_commands() -> dict[str, CommandInfo]:
    """Every command of ``diffsampler`` by name, with the root options (``--debug``, ``--help``) on each."""
    from diffsampler.cli import app

    group = typer.main.get_command(app)
    root = {opt for p in group.params for opt in (*p.opts, *p.secondary_opts)} | {"--help"}
    out = {}
    for name, command in group.commands.items():
        opts = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        out[name] = CommandInfo(name, command, opts | root, _config_keys(command))
    return out


def _cell(text: str) -> str:
    """Text for one Markdown table cell: one line, pipes escaped, angle brackets shown rather than read as HTML."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _option_row(param: Any) -> str:
    names = ", ".join(f"`{opt}`" for opt in (*param.opts, *param.secondary_opts))
    if param.param_type_name == "argument":
        names = f"`{str(param.name).upper()}` (argument)"
    help_text = getattr(param, "help", None) or ""
    return f"| {names} | {_cell(help_text)} |"


def reference_markdown(name: str) -> str:
    """The options table and the config keys (with defaults) of one command, as Markdown."""
    info = cli_commands()[name]
    lines = [f"Generated from `diffsampler {name} --help`.", "", "| option | meaning |", "|---|---|"]
    lines += [_option_row(p) for p in info.command.params if p.name != "help"]
    if info.keys:
        from diffsampler.cli_config import show_yaml

        lines += ["", "Config keys (`--config FILE`, `--set KEY=VALUE`) and their defaults:", ""]
        lines += ["| key | default |", "|---|---|"]
        lines += [f"| `{key}` | `{_cell(show_yaml(value))}` |" for key, value in info.keys.items()]
    return "\n".join(lines)


def _message(node: Any) -> str:
    """The text of a message expression, with each formatted value shown as {...}."""
    import ast

    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_message(v) if isinstance(v, ast.Constant) else "{...}" for v in node.values)
    if isinstance(node, ast.BinOp):
        return _message(node.left) + _message(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return _message(node.func.value)
    return "{...}"


def user_errors() -> dict[str, list[str]]:
    """Every ``UserError(...)`` message of the package, by module (read from the source, placeholders as {...})."""
    import ast
    from pathlib import Path

    import diffsampler

    root = Path(diffsampler.__file__).parent
    out: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        found = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "UserError" and node.args:
                found.append(_message(node.args[0]))
        if found:
            out[path.relative_to(root.parent).as_posix()] = sorted(set(found))
    return out


def errors_markdown() -> str:
    """The generated list of every one-line error, by module."""
    lines = []
    for module, messages in user_errors().items():
        lines += ["", f"**`{module}`**", ""]
        lines += [f"- `{' '.join(m.split()).replace('`', chr(39))}`" for m in messages]
    return "\n".join(lines)


def solvers_markdown() -> str:
    """The solver registry as a table: NFE per step, default schedule, options with their defaults."""
    from diffsampler.solvers import SOLVERS

    lines = ["| solver | NFE per step | default schedule | options (defaults) | needs |", "|---|---|---|---|---|"]
    for spec in SOLVERS.values():
        options = ", ".join(f"`{k}={v!r}`" for k, v in spec.options.items())
        needs = ", ".join(f"`{r}`" for r in spec.requires) or "-"
        lines.append(f"| `{spec.name}` | {spec.evals_per_step} | `{spec.default_schedule}` | {options} | {needs} |")
    return "\n".join(lines)


def schedules_markdown() -> str:
    """The schedule registry as a table."""
    from diffsampler.schedules import SCHEDULES

    lines = ["| schedule | default rho | what it is |", "|---|---|---|"]
    lines += [f"| `{s.name}` | {s.default_rho} | {_cell(s.summary)} |" for s in SCHEDULES.values()]
    return "\n".join(lines)


def metrics_markdown() -> str:
    """The metric registry as a table."""
    from diffsampler.bench.metric_registry import METRICS

    lines = ["| metric | what it measures |", "|---|---|"]
    lines += [f"| `{m.name}` | {_cell(m.summary)} |" for m in METRICS.values()]
    return "\n".join(lines)


GENERATED = {
    "all-user-errors": errors_markdown,
    "solver-table": solvers_markdown,
    "schedule-table": schedules_markdown,
    "metric-table": metrics_markdown,
}
"""Markers ``<!-- NAME -->`` that the MkDocs hook replaces by generated Markdown."""
