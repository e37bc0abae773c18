"""sha256 of a file's bytes, read in blocks: the identity of shipped weights and of the artefacts a table cell used."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def artefacts_sha256(values: Iterable[object]) -> str | None:
    """sha256 (12 hex digits) over the files that ``values`` name (a folder: every file under it), None if none do.

    A benchmark folds it into a label's code hash, so that records made with another predictor or statistics
    file than the one now at the same path are recomputed rather than reused.
    """
    files: set[Path] = set()
    for value in values:
        if isinstance(value, str) and value:
            path = Path(value)
            files.update(
                [path] if path.is_file() else (p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
            )
    if not files:
        return None
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(str(path).encode() + b"\0" + file_sha256(path).encode() + b"\0")
    return digest.hexdigest()[:12]
