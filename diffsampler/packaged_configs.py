"""The example configs installed with the package, named without a path: ``--config fmnist-p1-full``.

They are the files of the repository's top-level ``configs/<kind>/`` (``diffsampler/configs`` links there, so the
wheel holds one copy of them). ``--config X`` reads the file X where it exists, else the packaged config named X
of the command's kind (the file name without .yaml); anything else is one line with a "did you mean".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from diffsampler.errors import UserError, unknown_choice

ROOT = Path(__file__).resolve().parent / "configs"
KINDS = {
    "sample": "sample",
    "train-amed": "amed",
    "train-model": "train",
    "benchmark": "benchmark",
    "compute-ems": "ems",
}
"""Command -> the folder of its packaged configs."""
REPOSITORY_PATH = re.compile(r"^(results|configs|scripts)/|\.(pt|npz|json|yaml|pkl)$")
"""A string value that names a file of the repository (an artefact, a schedule file, a model file, a run)."""


@dataclass(frozen=True)
class PackagedConfig:
    """One packaged config: its command, name, file, first sentence and the repository files it reads."""

    command: str
    name: str
    path: Path
    summary: str
    reads: tuple[str, ...]


def _summary(text: str) -> str:
    """The first clause of the file's leading comment block (up to its first '. ', ': ', '; ' or ' (')."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    words = " ".join(lines)
    return re.split(r"\. |: |; | \(", words)[0].rstrip(".")


OUTPUT_KEYS = ("out", "name")
"""Keys that name what a command writes, not what it reads."""


def _strings(value: Any) -> list[str]:
    """Every string value of a parsed YAML document, but those of ``OUTPUT_KEYS``."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() if k not in OUTPUT_KEYS for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def packaged_configs(command: str) -> dict[str, PackagedConfig]:
    """The packaged configs of ``command`` (a key of ``KINDS``), by name."""
    found = {}
    for path in sorted((ROOT / KINDS[command]).glob("*.yaml")):
        text = path.read_text()
        reads = tuple(dict.fromkeys(s for s in _strings(yaml.safe_load(text)) if REPOSITORY_PATH.search(s)))
        found[path.stem] = PackagedConfig(command, path.stem, path, _summary(text), reads)
    return found


def resolve_config(given: str | Path | None, command: str) -> Path | None:
    """The config file ``given`` names: itself where it exists, else the packaged config of that name; a
    UserError (with a "did you mean") for neither."""
    if given is None or Path(given).is_file():
        return None if given is None else Path(given)
    text = str(given)
    configs = packaged_configs(command)
    name = text[: -len(".yaml")] if text.endswith(".yaml") else text
    if name in configs:
        return configs[name].path
    if "/" in text or text.endswith((".yaml", ".yml")):
        raise UserError(
            f"config file not found: {text}; give an existing YAML file or a packaged config name "
            f"(`diffsampler list` shows them)"
        )
    raise unknown_choice(f"{command} config", text, configs)
