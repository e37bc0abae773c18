"""The result store of one run: a manifest and one JSON record per (solver label, NFE, samples, metric).

Layout under results/<run>/: ``run.json`` (what makes records comparable: model hash, seed, dtype,
sigma range, code versions, and what each label and metric stood for) and
``records/<label>/nfe<N>/n<samples>/<metric>.json``. Every file is written atomically, so a killed run
loses at most the cell in progress; a record, once written, is never rewritten.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffsampler import __version__
from diffsampler.atomic import atomic_write_bytes, ensure_writable_dir
from diffsampler.errors import UserError

FORMAT = 1


def slug(label: str) -> str:
    """A file-name-safe form of a label, with a short hash so distinct labels never collide."""
    text = re.sub(r"[^A-Za-z0-9._=-]+", "_", label).strip("_")[:60] or "solver"
    return f"{text}-{hashlib.sha256(label.encode()).hexdigest()[:6]}"


def source_hash(fn: Any) -> str:
    """sha256 (12 hex digits) of the source file of the module defining ``fn``."""
    path = inspect.getsourcefile(fn)
    data = Path(path).read_bytes() if path else repr(fn).encode()
    return hashlib.sha256(data).hexdigest()[:12]


def dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class Manifest:
    """What the records of a run depend on: fixed keys must match; labels and metrics may be added."""

    fixed: dict[str, Any]
    solvers: dict[str, dict[str, Any]]
    metrics: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "diffsampler": __version__, **self.fixed, "solvers": self.solvers, "metrics": self.metrics}


def _first_difference(old: dict[str, Any], new: Manifest) -> str | None:
    """A short description of the first incomparable change, or None when the run can go on."""
    for key, value in {"format": FORMAT, "diffsampler": __version__, **new.fixed}.items():
        if old.get(key) != value:
            return f"{key} was {json.dumps(old.get(key))}, now {json.dumps(value)}"
    for group, current in (("solver label", new.solvers), ("metric", new.metrics)):
        earlier = old.get("solvers" if group == "solver label" else "metrics", {})
        for name, definition in current.items():
            if name in earlier and earlier[name] != definition:
                return f"{group} '{name}' was {json.dumps(earlier[name], sort_keys=True)}, " f"now {json.dumps(definition, sort_keys=True)}"
    return None


class ResultStore:
    """Records of one run folder; ``open`` checks comparability before anything is written."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest_path = folder / "run.json"

    def check(self, manifest: Manifest, fresh: bool) -> dict[str, Any] | None:
        """The manifest to write (None when the one on disk already says it all); writes nothing.

        Refuses (one line) a folder that is not a run, or records made under an incomparable setup unless ``fresh``.
        """
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(f"{self.folder} exists and is not a folder; choose another --name or --out")
        merged = manifest.to_json()
        if fresh:
            return merged
        if self.manifest_path.is_file():
            try:
                old = json.loads(self.manifest_path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise UserError(f"{self.manifest_path} cannot be read ({exc}); use --fresh to start the run over") from exc
            change = _first_difference(old, manifest)
            if change is not None:
                raise UserError(
                    f"run folder {self.folder} holds records that are not comparable ({change}); "
                    "use --fresh to start over or --name for a new run"
                )
            merged["solvers"] = {**old.get("solvers", {}), **manifest.solvers}
            merged["metrics"] = {**old.get("metrics", {}), **manifest.metrics}
            return None if merged == old else merged
        if self.folder.is_dir() and any(self.folder.iterdir()):
            raise UserError(f"{self.folder} is not empty and holds no run.json; choose another --name or use --fresh")
        return merged

    def open(self, manifest: Manifest, fresh: bool) -> None:
        """Start or resume the run (after ``check``); ``fresh`` first deletes the run's earlier records."""
        merged = self.check(manifest, fresh)
        if fresh and self.folder.exists():
            shutil.rmtree(self.folder)
        ensure_writable_dir(self.folder)
        if merged is not None:
            atomic_write_bytes(self.manifest_path, dumps(merged))
        self._clean_temporaries()

    def _clean_temporaries(self) -> None:
        """Remove temporary files a killed run left behind (atomic writes use hidden '.name.*' files)."""
        for path in self.folder.rglob(".*"):
            if path.is_file():
                path.unlink()

    def record_path(self, label: str, nfe: int, num_samples: int, metric: str) -> Path:
        return self.folder / "records" / slug(label) / f"nfe{nfe:03d}" / f"n{num_samples}" / f"{metric}.json"

    def read(self, label: str, nfe: int, num_samples: int, metric: str) -> dict[str, Any] | None:
        path = self.record_path(label, nfe, num_samples, metric)
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    def write(self, record: dict[str, Any]) -> None:
        """Write a record once (atomically); an existing record is kept as it is."""
        path = self.record_path(record["label"], record["nfe"], record["num_samples"], record["metric"])
        if not path.exists():
            atomic_write_bytes(path, dumps(record))

    def grid_path(self, label: str, nfe: int) -> Path:
        return self.folder / "grids" / slug(label) / f"nfe{nfe:03d}.png"
