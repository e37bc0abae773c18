"""The documentation pages (README.md and docs/**/*.md) and their fenced code blocks, for the docs tests.

Convention (shared by every branch that writes docs): fenced blocks of language ``bash`` or ``python`` are executed;
``console``, ``text``, ``yaml`` and the rest are not. The HTML comment ``<!-- docs-test: skip (reason) -->`` on the
line right before a fence skips that block; the reason is required.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUN_LANGUAGES = ("bash", "python")
SKIP = re.compile(r"^<!-- docs-test: skip \((?P<reason>[^)]+)\) -->$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its page, the line of its opening fence, language, text and skip reason (if any)."""

    page: Path
    line: int
    lang: str
    text: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT).as_posix()}:{self.line}"


def pages() -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def blocks(page: Path, text: str | None = None) -> list[Block]:
    """The fenced blocks of a page, in order (``text`` overrides the file's content, for tests of the parser)."""
    lines = (page.read_text() if text is None else text).splitlines()
    out, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match or not match["lang"]:
            i += 1
            continue
        start, indent = i, len(match["indent"])
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:])
            i += 1
        marker = SKIP.match(lines[start - 1].strip()) if start else None
        bad_marker = start and "docs-test" in lines[start - 1] and not marker
        if bad_marker:
            raise ValueError(f"{page}:{start}: malformed docs-test marker: {lines[start - 1].strip()}")
        skip = marker["reason"] if marker else None
        out.append(Block(page, start + 1, match["lang"], "\n".join(body) + "\n", skip))
        i += 1
    return out


def all_blocks() -> list[Block]:
    return [b for page in pages() for b in blocks(page)]


def load_cli_reference():
    """docs/cli_reference.py: the commands, options and config keys read from the Typer app."""
    if str(DOCS) not in sys.path:
        sys.path.insert(0, str(DOCS))
    import cli_reference

    return cli_reference
