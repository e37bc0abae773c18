"""The converged value a benchmark's plots draw as a line: each metric's value at the highest NFE of another run
(config key ``converged``: its folder) made on the same model, seed and number of samples."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffsampler.errors import UNREADABLE_FILE, UserError


@dataclass(frozen=True)
class Converged:
    """Metric -> converged value, what they are (for the plots' legend and the tables' note), and a note where the
    named run could not be read."""

    values: dict[str, float] = field(default_factory=dict)
    label: str = "converged"
    note: str | None = None


def _highest_nfe_values(cells: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, str]]:
    """Per metric, the value of the first ok cell at the highest NFE that scored it, and 'label at NFE n'."""
    values: dict[str, float] = {}
    where: dict[str, str] = {}
    for cell in sorted(cells, key=lambda c: -int(c.get("nfe", 0))):
        for metric, value in (cell.get("values") or {}).items():
            if metric not in values and isinstance(value, (int, float)):
                values[metric] = float(value)
                where[metric] = f"{cell.get('label')} at NFE {cell.get('nfe')}"
    return values, where


def read_converged(folder: str | None, model: str, seed: int, num_samples: int) -> Converged:
    """The converged values of the run in ``folder`` (its results.json); none when unset; a note when the run is
    not there (so a packaged config runs outside the repository); a UserError when it was made on another model,
    seed or number of samples (its values would not be comparable)."""
    if folder is None:
        return Converged()
    path = Path(folder) / "results.json"
    try:
        run = json.loads(path.read_text())
    except UNREADABLE_FILE:
        return Converged(note=f"converged run {folder} not found (no results.json): no converged line drawn")
    theirs = (run.get("model"), run.get("seed"), run.get("num_samples"))
    if theirs != (model, seed, num_samples):
        raise UserError(
            f"converged run {folder} is of model {theirs[0]}, seed {theirs[1]}, {theirs[2]} samples; this run has "
            f"{model}, seed {seed}, {num_samples} samples: name a run made on the same ones, or drop 'converged'"
        )
    values, where = _highest_nfe_values(run.get("cells") or [])
    sources = ", ".join(dict.fromkeys(where.values()))
    return Converged(values, f"converged: {sources}" if sources else "converged")
