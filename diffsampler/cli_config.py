"""The one form of every config-driven command: ``--config FILE``, repeated ``--set key=value``, a few common flags.

A flag is a shortcut for one config key and defaults to None, so that a value from the file or ``--set`` stands
unless the flag is given. The defaults that ``--help`` shows are read from the config dataclass when help is
drawn (each default is declared once, in the dataclass; torch loads only for help, not for parsing).
"""

from __future__ import annotations

import importlib
import json
from typing import Any, Mapping

import typer
from typer.core import TyperCommand

from diffsampler.config import flat_dict

CONFIG_HELP = (
    "YAML config file, or the name of a packaged one ({where} without .yaml; `diffsampler list` shows them); "
    "--set items and the flags below override its keys."
)
SET_HELP = (
    "Set one config key, repeatable: --set key=value, the value read as YAML (3, true, [1, 2]); "
    "a.b=v sets entry b of the mapping a. The keys and their defaults are listed at the end."
)
COMMON_HELP = {
    "model": "Model name, LOADER:PATH or python:FILE.py:NAME (see `diffsampler list`).",
    "solver": "Solver name (see `diffsampler list`).",
    "schedule": "Sigma schedule name, or a schedule file PATH.json (search-schedule); unset: the solver's own.",
    "nfe": "Network evaluations per sample.",
    "data": "Data source: fashion-mnist[:test], an image folder, a .zip or an .npz.",
    "num_samples": "Number of samples.",
    "batch_size": "Samples per network call.",
    "seed": "Seed; sample i uses a generator seeded by (seed, i).",
    "device": "auto, cpu or cuda.",
    "out": "Parent folder of the output.",
    "name": "Output name.",
}
"""What each common flag means; a command may say more where its key means more."""


def config_option(where: str) -> Any:
    """``--config FILE`` (``where``: the folder of examples, e.g. configs/sample/*.yaml)."""
    return typer.Option(None, "--config", "-c", help=CONFIG_HELP.format(where=where))


def set_option() -> Any:
    """``--set key=value``, repeatable."""
    return typer.Option(None, "--set", "-s", metavar="KEY=VALUE", help=SET_HELP)


def flag(key: str, text: str | None = None) -> Any:
    """The common flag for config key ``key`` (``--batch-size`` for batch_size), defaulting to None."""
    return typer.Option(None, "--" + key.replace("_", "-"), help=text or COMMON_HELP[key])


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def show_value(value: Any) -> str:
    """A flag's default as its help shows it: on/off for booleans, comma-separated lists (as --nfe takes them)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def show_yaml(value: Any) -> str:
    """A key's default as ``--set`` takes it: YAML's true, false, null, [1, 2] and {}."""
    return value if isinstance(value, str) else json.dumps(value)


def _describe(command: TyperCommand, target: str, unset: Mapping[str, str], keys: bool = True) -> None:
    """Add 'Default X.' to each flag of a config key and (``keys``) list every key with its default in the epilog
    (once)."""
    if getattr(command, "_described", False):
        return
    defaults = flat_dict(_load(target)())
    shown = {**defaults, **{key: _load(where) for key, where in unset.items() if defaults.get(key) is None}}
    for param in command.params:
        value = shown.get(str(param.name))
        if param.param_type_name == "option" and param.default is None and value is not None:
            param.help = f"{getattr(param, 'help', '')} Default {show_value(value)}."  # type: ignore[attr-defined]
    if keys:
        listed = ", ".join(f"{key}={show_yaml(value)}" for key, value in defaults.items())
        command.epilog = f"Config keys (--config FILE, --set KEY=VALUE) and their defaults: {listed}."
    command._described = True  # type: ignore[attr-defined]


def config_command(target: str, unset: Mapping[str, str] | None = None, keys: bool = True) -> type[TyperCommand]:
    """A command class whose help states the defaults of the dataclass ``target`` ("module:Name").

    ``unset`` maps a key whose default is None to the "module:NAME" of the value None stands for; ``keys`` False
    leaves out the list of config keys (a command of flags alone).
    """

    class ConfigCommand(TyperCommand):
        config_target = target
        """The config dataclass ("module:Name"), read by the docs' option reference and its test."""

        def format_help(self, ctx: Any, formatter: Any) -> None:
            _describe(self, target, unset or {}, keys)
            super().format_help(ctx, formatter)

    return ConfigCommand
