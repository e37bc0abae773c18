"""MkDocs hook: serve the committed run folders' images from ``results/`` without copying them into ``docs/``.

Every PNG under the repository's ``results/`` becomes the site file ``runs/<path>``, so a page under
``docs/results/`` shows ``results/fmnist-p1-full/fd_fmnist_vs_nfe.png`` as ``../runs/fmnist-p1-full/...``
(the links are checked by ``mkdocs build --strict`` like any other). Not part of the package.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parent.parent / "results"


def on_files(files: Files, config) -> Files:  # noqa: ANN001 (MkDocs' config type)
    for path in sorted(RESULTS.rglob("*.png")):
        rel = path.relative_to(RESULTS).as_posix()
        files.append(File.generated(config, f"runs/{rel}", abs_src_path=str(path)))
    return files


MARKER = re.compile(r"<!-- cli-reference: ([a-z-]+) -->")


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001
    """Replace ``<!-- cli-reference: COMMAND -->`` by that command's generated options and config keys."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cli_reference import GENERATED, reference_markdown

    markdown = MARKER.sub(lambda m: reference_markdown(m.group(1)), markdown)
    for name, make in GENERATED.items():
        if f"<!-- {name} -->" in markdown:
            markdown = markdown.replace(f"<!-- {name} -->", make())
    return markdown
