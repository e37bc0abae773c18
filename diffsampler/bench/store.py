"""The result store of one run: a manifest and one JSON record per (solver label, NFE, samples, metric).

Layout under results/<run>/: ``run.json`` (what makes records comparable: model hash, seed, dtype,
sigma range, code versions, and what each label and metric stood for),
``records/<label>/nfe<N>/n<samples>/<metric>.json``, sample previews ``grids/<label>/nfe<N>.png`` and the reports
(listed in the folder's marker, ``atomic.MARKER``). Every file is written atomically, so a killed run
loses at most the cell in progress; a record, once written, is never rewritten. When only the code
hash of a label or a metric changed (``diffsampler/codehash.py``), its records are stale: they are deleted
and recomputed, and the other records are kept. Only files at these paths are ever deleted (``--fresh`` deletes
them all): anything else a user keeps in the run folder, records/ included, stays.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffsampler import __version__
from diffsampler.atomic import (
    MARKER,
    atomic_write_bytes,
    ensure_writable_dir,
    own_files,
    remove_own_file,
    remove_stale_temporaries,
)
from diffsampler.config import FULL_PRECISION
from diffsampler.errors import UNREADABLE_FILE, UserError, shorten

FORMAT = 1
RECORD_KEYS = ("label", "nfe", "num_samples", "metric", "value")
log = logging.getLogger(__name__)
_SLUG = r"[A-Za-z0-9._=-]+-[0-9a-f]{6}"
RECORD_PATH = re.compile(rf"records/{_SLUG}/nfe\d{{3,}}/n\d+/[A-Za-z0-9._-]+\.json", re.ASCII)
"""Where records stand (relative to the run folder): only files at such paths are deleted as records."""
GRID_PATH = re.compile(rf"grids/{_SLUG}/nfe\d{{3,}}\.png", re.ASCII)
"""Where the sample previews stand."""
REPORT_PATH = re.compile(r"table\.md|table\.csv|sigmas\.csv|results\.json|[A-Za-z0-9_]+_vs_(?:nfe|time)\.png", re.ASCII)
"""The report files of a run folder written before its marker listed them (``--fresh`` deletes them too)."""


def slug(label: str) -> str:
    """A file-name-safe form of a label, with a short hash so distinct labels never collide."""
    text = re.sub(r"[^A-Za-z0-9._=-]+", "_", label).strip("_")[:60] or "solver"
    return f"{text}-{hashlib.sha256(label.encode()).hexdigest()[:6]}"


def dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class Manifest:
    """What the records of a run depend on: fixed keys must match; labels and metrics may be added."""

    fixed: dict[str, Any]
    solvers: dict[str, dict[str, Any]]
    metrics: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "diffsampler": __version__,
            **self.fixed,
            "solvers": self.solvers,
            "metrics": self.metrics,
        }


def _without_code(definition: Any) -> Any:
    return {k: v for k, v in definition.items() if k != "code"} if isinstance(definition, dict) else definition


ABSENT_FIXED = {"precision": FULL_PRECISION}
"""What a fixed key that a run.json leaves out stands for (``config.recorded_precision``)."""


def _first_difference(old: dict[str, Any], new: Manifest) -> str | None:
    """A short description of the first incomparable change (a code change is not one), or None."""
    fixed = {"format": FORMAT, "diffsampler": __version__, **new.fixed}
    for key in [*fixed, *(k for k in old if k not in fixed and k not in ("solvers", "metrics"))]:
        was, now = old.get(key, ABSENT_FIXED.get(key)), fixed.get(key, ABSENT_FIXED.get(key))
        if was != now:  # a fixed key only one side records (precision) differs as well
            return f"{key} was {json.dumps(was)}, now {json.dumps(now)}"
    for group, current in (("solver label", new.solvers), ("metric", new.metrics)):
        earlier = old.get("solvers" if group == "solver label" else "metrics", {})
        for name, definition in current.items():
            if name in earlier and _without_code(earlier[name]) != _without_code(definition):
                was, now = json.dumps(earlier[name], sort_keys=True), json.dumps(definition, sort_keys=True)
                return f"{group} '{name}' was {was}, now {now}"
    return None


def _changed_code(old: dict[str, Any], current: dict[str, dict[str, Any]]) -> set[str]:
    """Names whose recorded code hash differs from the current one (their records are stale)."""
    return {name for name, new in current.items() if name in old and old[name].get("code") != new.get("code")}


class ResultStore:
    """Records of one run folder; ``open`` checks comparability before anything is written."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest_path = folder / "run.json"
        self.stale_labels: set[str] = set()
        self.stale_metrics: set[str] = set()
        self.rewrite: set[Path] = set()

    def check(self, manifest: Manifest, fresh: bool) -> dict[str, Any] | None:
        """The manifest to write (None when the one on disk already says it all); writes nothing.

        Refuses (one line) a folder that is not a run, or records made under an incomparable setup unless ``fresh``.
        """
        if self.folder.is_symlink() or (self.folder.exists() and not self.folder.is_dir()):
            raise UserError(f"{self.folder} exists and is not a folder; choose another --name or --out")
        if fresh and not self.is_run() and self.folder.is_dir() and any(self.folder.iterdir()):
            raise UserError(
                f"{self.folder} holds no run.json, so it is not a benchmark run and --fresh leaves it alone; "
                "choose another --name or --out"
            )
        merged = manifest.to_json()
        if fresh:
            return merged
        if self.manifest_path.is_file():
            try:
                old = json.loads(self.manifest_path.read_text())
            except (OSError, ValueError) as exc:
                raise UserError(
                    f"{self.manifest_path} cannot be read ({shorten(exc, as_repr=False)}); "
                    "use --fresh to start the run over"
                ) from exc
            change = _first_difference(old, manifest)
            if change is not None:
                raise UserError(
                    f"run folder {self.folder} holds records that are not comparable ({change}); "
                    "use --fresh to start over or --name for a new run"
                )
            self.stale_labels = _changed_code(old.get("solvers", {}), manifest.solvers)
            self.stale_metrics = _changed_code(old.get("metrics", {}), manifest.metrics)
            merged["solvers"] = {**old.get("solvers", {}), **manifest.solvers}
            merged["metrics"] = {**old.get("metrics", {}), **manifest.metrics}
            return None if merged == old else merged
        if self.folder.is_dir() and any(self.folder.iterdir()):
            raise UserError(
                f"{self.folder} is not empty and holds no run.json (not a benchmark run); "
                "choose another --name or --out"
            )
        return merged

    def is_run(self) -> bool:
        """True when the folder is a run of ours: it holds run.json and a records/ folder, or a readable manifest."""
        if not self.manifest_path.is_file():
            return False
        if (self.folder / "records").is_dir():
            return True
        try:
            return "diffsampler" in json.loads(self.manifest_path.read_text())
        except (OSError, ValueError, TypeError):
            return False

    def open(self, manifest: Manifest, fresh: bool) -> None:
        """Start or resume the run (after ``check``); ``fresh`` first deletes the run's earlier records."""
        merged = self.check(manifest, fresh)
        if fresh and self.folder.exists():
            self.remove_own()
        ensure_writable_dir(self.folder)
        self._remove_stale()
        if merged is not None:
            atomic_write_bytes(self.manifest_path, dumps(merged))
        self._clean_temporaries()

    def own(self, relative: str, listed: set[str] | None) -> bool:
        """True for a file of ours: run.json, a record, a preview, or a report (``listed`` by the marker; without a
        marker, one at a report name)."""
        if relative == "run.json" or RECORD_PATH.fullmatch(relative) or GRID_PATH.fullmatch(relative):
            return True
        return relative in listed if listed is not None else bool(REPORT_PATH.fullmatch(relative))

    def remove_own(self) -> None:
        """``--fresh``: delete our files (``own``) and the folders they leave empty; nothing else is touched."""
        listed = own_files(self.folder)
        for path in sorted(self.folder.rglob("*"), reverse=True):
            relative = path.relative_to(self.folder).as_posix()
            if not path.is_dir() and self.own(relative, listed):
                remove_own_file(self.folder, relative)
        remove_own_file(self.folder, MARKER)

    def _remove_own_records(self, pattern: str) -> None:
        """Delete our records matching ``pattern`` (a glob under the run folder)."""
        for path in self.folder.glob(pattern):
            relative = path.relative_to(self.folder).as_posix()
            if path.is_file() and RECORD_PATH.fullmatch(relative):
                remove_own_file(self.folder, relative)

    def _remove_stale(self) -> None:
        """Delete the records made by other code than the current one (before the manifest says the new code)."""
        for label in sorted(self.stale_labels):
            log.warning(
                "the code of solver label '%s' changed since its records were made: recomputing its cells",
                label,
            )
            self._remove_own_records(f"records/{glob.escape(slug(label))}/*/*/*.json")
        for metric in sorted(self.stale_metrics):
            log.warning("the code of metric '%s' changed since its records were made: it is recomputed", metric)
            self._remove_own_records(f"records/*/*/*/{glob.escape(metric)}.json")
        self.stale_labels, self.stale_metrics = set(), set()

    def _clean_temporaries(self) -> None:
        """Remove temporaries a killed run left behind (atomic writes use hidden '.name.tmp-<pid>-*' files)."""
        remove_stale_temporaries(self.folder, recursive=True)

    def record_path(self, label: str, nfe: int, num_samples: int, metric: str) -> Path:
        return self.folder / "records" / slug(label) / f"nfe{nfe:03d}" / f"n{num_samples}" / f"{metric}.json"

    def read(self, label: str, nfe: int, num_samples: int, metric: str) -> dict[str, Any] | None:
        path = self.record_path(label, nfe, num_samples, metric)
        if label in self.stale_labels or metric in self.stale_metrics or path in self.rewrite or not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict) or any(key not in record for key in RECORD_KEYS):
                raise ValueError("not a record")
        except UNREADABLE_FILE as exc:
            log.warning("record %s is damaged (%s): its cell is computed again", path, exc)
            self.rewrite.add(path)
            return None
        return record

    def outdated(self, label: str, nfe: int, num_samples: int, metric: str, why: str) -> None:
        """Mark a readable record as made for something else (``why``): it is computed again and replaced."""
        path = self.record_path(label, nfe, num_samples, metric)
        log.warning("record %s was made %s: its cell is computed again", path, why)
        self.rewrite.add(path)

    def write(self, record: dict[str, Any]) -> None:
        """Write a record once (atomically); an existing record is kept, unless it was found damaged or outdated."""
        path = self.record_path(record["label"], record["nfe"], record["num_samples"], record["metric"])
        if not path.exists() or path in self.rewrite:
            atomic_write_bytes(path, dumps(record))
            self.rewrite.discard(path)

    def grid_path(self, label: str, nfe: int) -> Path:
        return self.folder / "grids" / slug(label) / f"nfe{nfe:03d}.png"
