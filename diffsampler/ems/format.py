"""The statistics folder: the authors' `l.npz` (key l) and `sb.npz` (keys s, b), float64, shape (N + 1, C, H, W)
(or (N + 1, *sample_shape) for other models), plus `meta.json` with the model hash and the sigma range.

Folders without `meta.json` (the authors' released files) load when the user states their sigma range;
the model hash cannot be checked for them.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from diffsampler.artefacts import register_prepare_hook
from diffsampler.atomic import save_npz
from diffsampler.errors import UNREADABLE_FILE, UserError
from diffsampler.solvers.dpm_solver_v3 import EmpiricalStatistics

log = logging.getLogger(__name__)

L_FILE, SB_FILE, META_FILE = "l.npz", "sb.npz", "meta.json"
FORMAT_VERSION = 1
RANGE_RTOL = 1e-6
"""Two sigma ranges are the same when their ends agree to this relative tolerance."""


def write_statistics(folder: Path, l: np.ndarray, s: np.ndarray, b: np.ndarray, meta: Mapping[str, Any]) -> None:
    """Write the three arrays in the authors' format and the metadata into an (atomic, temporary) folder."""
    save_npz(folder / L_FILE, l=np.asarray(l, dtype=np.float64))
    save_npz(folder / SB_FILE, s=np.asarray(s, dtype=np.float64), b=np.asarray(b, dtype=np.float64))
    (folder / META_FILE).write_text(json.dumps({"format": FORMAT_VERSION, **meta}, indent=2))


def _read(path: Path, keys: tuple[str, ...]) -> list[np.ndarray]:
    if not path.is_file():
        raise UserError(
            f"statistics file {path} is missing (a statistics folder holds {L_FILE}, {SB_FILE} and {META_FILE}); "
            "make it with `diffsampler compute-ems`"
        )
    try:
        with np.load(path) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise UserError(f"{path} lacks the array(s) {', '.join(missing)}; expected keys {', '.join(keys)}")
            return [np.asarray(data[k], dtype=np.float64) for k in keys]
    except UNREADABLE_FILE as exc:
        reason = str(exc) or type(exc).__name__
        raise UserError(
            f"cannot read statistics file {path} ({reason}): it is damaged; "
            "make it again with `diffsampler compute-ems`"
        ) from exc


def same_range(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return all(math.isclose(x, y, rel_tol=RANGE_RTOL) for x, y in zip(a, b))


def load_statistics(
    folder: str | Path, sigma_min: float | None = None, sigma_max: float | None = None
) -> EmpiricalStatistics:
    """Statistics from a folder; the sigma range comes from meta.json or, without one, from the arguments."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"statistics folder not found: {folder} (make one with `diffsampler compute-ems`)")
    (l,) = _read(folder / L_FILE, ("l",))
    s, b = _read(folder / SB_FILE, ("s", "b"))
    stated = None if sigma_min is None and sigma_max is None else (sigma_min, sigma_max)
    if stated is not None and None in stated:
        raise UserError("state both ends of the statistics' sigma range: -o stats_sigma_min=... -o stats_sigma_max=...")
    meta_path = folder / META_FILE
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            sigma_range = (float(meta["sigma_min"]), float(meta["sigma_max"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"cannot read {meta_path}: {exc}") from exc
        if stated is not None and not same_range(stated, sigma_range):  # type: ignore[arg-type]
            raise UserError(
                f"the stated sigma range {stated} differs from the range {sigma_range} recorded in {meta_path}"
            )
        model_hash = meta.get("model", {}).get("sha256")
    elif stated is not None:
        sigma_range, model_hash = (float(stated[0]), float(stated[1])), None  # type: ignore[arg-type]
        log.warning("statistics in %s have no %s: the model they were made for cannot be checked", folder, META_FILE)
    else:
        raise UserError(
            f"{folder} has no {META_FILE}, so its sigma range is unknown; "
            "state it with -o stats_sigma_min=... -o stats_sigma_max=... "
            "(the authors' EDM files: 0.002 and 80)"
        )
    return EmpiricalStatistics(l, s, b, sigma_range[0], sigma_range[1], model_hash)


def check_statistics(stats: EmpiricalStatistics, model: Mapping[str, Any], sigmas: list[float]) -> None:
    """Refuse statistics made for another model, sample shape or sigma range (one line each)."""
    if stats.model_sha256 is not None and stats.model_sha256 != model.get("sha256"):
        raise UserError(
            "these statistics were made for another model (sha256 "
            f"{stats.model_sha256[:12]}..., this model {str(model.get('sha256'))[:12]}...); "
            "run `diffsampler compute-ems` for this model"
        )
    if list(stats.sample_shape) != list(model.get("sample_shape", stats.sample_shape)):
        raise UserError(
            f"statistics of shape {list(stats.sample_shape)} do not fit "
            f"this model's samples of shape {model.get('sample_shape')}"
        )
    grid = (min(sigmas), max(sigmas))
    if not same_range(grid, (stats.sigma_min, stats.sigma_max)):
        raise UserError(
            f"the statistics cover sigma {stats.sigma_min:g} to {stats.sigma_max:g} "
            f"but the sampling grid runs {grid[0]:g} to {grid[1]:g}; "
            f"sample with --set sigma_min={stats.sigma_min:g} --set sigma_max="
            f"{stats.sigma_max:g} or compute statistics for this range"
        )


def prepare_statistics(options: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """The `dpm-solver-v3` prepare hook: load ``options['stats']`` (a folder) and check it against the run."""
    stats = options["stats"]
    if not isinstance(stats, EmpiricalStatistics):
        stats = load_statistics(str(stats), options.get("stats_sigma_min"), options.get("stats_sigma_max"))
    check_statistics(stats, context["model"], list(context["sigmas"]))
    return {**options, "stats": stats}


def register_plugin() -> None:
    """The built-in plugin (group ``diffsampler.solvers``) that loads the statistics of `dpm-solver-v3`."""
    register_prepare_hook("dpm-solver-v3", prepare_statistics)
