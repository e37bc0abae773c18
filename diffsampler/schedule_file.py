"""Schedule files: a sigma grid in a small JSON file with what it was made for.

A learned grid (GITS, arXiv 2405.11326; LD3, arXiv 2405.15506) or any hand-made one is stored as
``{"format": "diffsampler-schedule", "version": 1, "sigmas": [...], "made_for": {...}, "method": ...}``.
``made_for`` names the model (and its content hash), the solver with its options and the NFE;
``search`` holds the method's settings (teacher, samples, seed, ...) and ``seconds`` the time taken.
Any solver may use any file: a file made for another model is used as it is, with a one-line
warning; the grid is never altered (an explicit NFE it does not cost is refused, ``sampling.plan_grid``).
Only ``sigmas`` is required.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from diffsampler.atomic import atomic_write_bytes
from diffsampler.config import MAX_NFE
from diffsampler.errors import UserError
from diffsampler.schedules import validate_sigmas

log = logging.getLogger(__name__)

FORMAT = "diffsampler-schedule"
VERSION = 1
SUFFIX = ".json"


@dataclass
class ScheduleArtefact:
    """A sigma grid (descending) and the record of what it was made for and how."""

    sigmas: list[float]
    method: str = "explicit"
    made_for: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": VERSION, **asdict(self)}, indent=2)


def is_schedule_path(name: str | None) -> bool:
    """True when a schedule name is a file path (ends in .json) rather than a registered schedule."""
    return name is not None and name.lower().endswith(SUFFIX)


def write_schedule(path: str | Path, artefact: ScheduleArtefact) -> Path:
    """Write the artefact atomically (the grid is validated first)."""
    validate_sigmas(artefact.sigmas)
    atomic_write_bytes(path, artefact.to_json().encode())
    return Path(path)


def is_schedule_file(path: Path) -> bool:
    """True when ``path`` holds a schedule file of ours (a JSON object with our format tag)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def _parse(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise UserError(f"schedule file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(
            f"schedule file {path} is not valid JSON ({exc}); write it with `diffsampler search-schedule`"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("sigmas"), list):
        raise UserError(f"schedule file {path} must hold a JSON object with a 'sigmas' list")
    if data.get("format", FORMAT) != FORMAT or data.get("version", VERSION) != VERSION:
        raise UserError(f"schedule file {path} is not a {FORMAT} version {VERSION} file")
    return data


def read_schedule(path: str | Path) -> ScheduleArtefact:
    """The artefact in ``path``; a missing, malformed or non-monotone file is one UserError line."""
    p = Path(path)
    data = _parse(p)
    values = data["sigmas"]
    if len(values) > MAX_NFE + 2:
        raise UserError(f"schedule file {p} holds {len(values):,} sigmas; the limit is {MAX_NFE + 2} (NFE {MAX_NFE})")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise UserError(f"schedule file {p}: 'sigmas' must be a list of numbers")
    try:
        grid = validate_sigmas(values)
    except UserError as exc:
        raise UserError(f"schedule file {p}: {exc}") from None
    made_for, search = data.get("made_for") or {}, data.get("search") or {}
    if not isinstance(made_for, dict) or not isinstance(search, dict):
        raise UserError(f"schedule file {p}: 'made_for' and 'search' must be JSON objects")
    seconds = data.get("seconds")
    return ScheduleArtefact(grid.tolist(), str(data.get("method", "explicit")), made_for, search, seconds)


def schedule_label(path: str | Path) -> str:
    """How a file schedule is named in records and tables: ``file:<stem>``."""
    return f"file:{Path(path).stem}"


def warn_other_model(path: str | Path, model_sha256: str, solver: str) -> None:
    """One warning line when a schedule file was made for another model (or solver); it is used as it is."""
    made_for = read_schedule(path).made_for
    made_sha = made_for.get("model_sha256")
    if made_sha and made_sha != model_sha256:
        log.warning(
            "schedule %s was made for model %s (sha256 %.12s), not this one; using it as it is",
            path,
            made_for.get("model"),
            made_sha,
        )
    made_solver = made_for.get("solver")
    if made_solver and made_solver != solver:
        log.info("schedule %s was made for solver %s and is used with %s", path, made_solver, solver)


def grid_of(path: str | Path) -> torch.Tensor:
    """The validated float64 grid of a schedule file."""
    return validate_sigmas(read_schedule(path).sigmas)
