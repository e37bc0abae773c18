"""Every bash and python example in README.md and docs/ runs as written, in a fresh temporary folder.

Bash blocks run with ``bash -e`` (so every line must succeed); the python blocks of one page run in order as one
script (one namespace), in a subprocess so that what they register does not leak into other tests. A block marked
``<!-- docs-test: skip (reason) -->`` is not run (see tests/docs_pages.py for the convention).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from docs_pages import Block, all_blocks, blocks

TIMEOUT_S = 300
"""Per block; the examples take seconds (small --num-samples, analytic models), this only stops a hang."""

RUN = [b for b in all_blocks() if b.lang in ("bash", "python") and b.skip is None]


def _env() -> dict[str, str]:
    """This interpreter's bin folder first on PATH, so ``diffsampler`` and ``python`` are the ones under test."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)


def _check(result: subprocess.CompletedProcess[str], where: str) -> None:
    assert result.returncode == 0, (
        f"{where} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )


@pytest.mark.parametrize("block", [b for b in RUN if b.lang == "bash"], ids=lambda b: b.id)
def test_bash_example_runs(block: Block, tmp_path: Path) -> None:
    _check(_run(["bash", "-e", "-o", "pipefail", "-c", block.text], tmp_path), block.id)


PYTHON_PAGES = sorted({b.page for b in RUN if b.lang == "python"})


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=lambda p: p.name)
def test_python_examples_of_a_page_run_in_order(page: Path, tmp_path: Path) -> None:
    script = "\n".join(b.text for b in blocks(page) if b.lang == "python" and b.skip is None)
    _check(_run([sys.executable, "-c", script], tmp_path), str(page))


def test_a_failing_example_fails(tmp_path: Path) -> None:
    """The runner can fail: a block whose first line fails stops there (bash -e) with a non-zero status."""
    (bad,) = blocks(Path("bad.md"), "```bash\ndiffsampler sample --model no-such-model\necho reached\n```\n")
    result = _run(["bash", "-e", "-c", bad.text], tmp_path)
    assert result.returncode == 2 and "reached" not in result.stdout
    assert "unknown model" in result.stderr


def test_skip_markers_need_a_reason_and_only_skip_the_next_block() -> None:
    text = "<!-- docs-test: skip (slow) -->\n```bash\nsleep 100\n```\n\n```bash\ntrue\n```\n"
    first, second = blocks(Path("page.md"), text)
    assert (first.skip, second.skip) == ("slow", None)
    with pytest.raises(ValueError, match="malformed docs-test marker"):
        blocks(Path("page.md"), "<!-- docs-test: skip -->\n```bash\ntrue\n```\n")


def test_the_docs_have_examples_to_run() -> None:
    """Guards the collection itself: a parser that found nothing would make every test above pass vacuously."""
    assert len([b for b in RUN if b.lang == "bash"]) >= 10 and PYTHON_PAGES
