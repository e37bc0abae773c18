"""A page that names a command, option or config key that does not exist fails here, and every command has a page.

What counts as naming: inside code (fenced blocks and inline `code` spans) of README.md and docs/**/*.md, a
``diffsampler COMMAND`` (also ``-m diffsampler COMMAND``) followed by its ``--options``, ``--set key=value`` items
(the key, or its part before the first dot, must be a config key of that command) and ``-o key=value`` solver options
(a key some registered solver takes). An inline span that is only options (``--fresh``, ``--set precision=auto``) is
checked against every command's options and keys. The truth is read from the Typer app and the config dataclasses
(docs/cli_reference.py), not from a list kept here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from docs_pages import DOCS, ROOT, blocks, load_cli_reference, pages

CODE_LANGS = ("bash", "console", "sh", "shell", "")
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
COMMAND = re.compile(r"(?:^|[\s;&|(])(?<!import )(?:python -m |-m )?diffsampler((?:\s+--debug)?)\s+([a-z][a-z0-9-]*)")


def _cli():
    return load_cli_reference().cli_commands()


def _solver_options(tokens: list[str]) -> set[str] | None:
    """The options of the solver a command line names (every solver's when it names none); None when it names a
    solver that is not registered (a page's own example solver: its python block runs it)."""
    from diffsampler.solvers import SOLVERS

    names = [tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t == "--solver"]
    if not names:
        return {key for spec in SOLVERS.values() for key in spec.options}
    return set(SOLVERS[names[-1]].options) if names[-1] in SOLVERS else None


def _code_lines(text: str) -> list[str]:
    """Every logical line of shell code in a page: fenced shell blocks (backslash continuations joined, comments
    dropped) and inline code spans."""
    out = []
    for block in blocks(Path("page.md"), text):
        if block.lang in CODE_LANGS:
            joined = block.text.replace("\\\n", " ")
            out += [line.split(" #")[0] for line in joined.splitlines() if not line.lstrip().startswith("#")]
    fenced = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.S | re.M)
    out += INLINE.findall(fenced)
    return out


def _tokens(segment: str) -> list[str]:
    try:
        return shlex.split(segment)
    except ValueError:  # an unbalanced quote inside prose-like code: fall back to whitespace
        return segment.split()


def _check_args(tokens: list[str], options: set[str], keys: set[str], where: str) -> list[str]:
    problems = []
    for i, token in enumerate(tokens):
        if token in ("|", "&&", ";", "||") or token.startswith(("|", ">")):
            break
        name = token.split("=", 1)[0]
        if token.startswith("--") and len(token) > 2 and name not in options:
            problems.append(f"{where}: unknown option {name}")
        value = tokens[i + 1] if i + 1 < len(tokens) else ""
        if token in ("--set", "-s") and "=" in value:
            key = value.split("=", 1)[0].split(".", 1)[0]
            if key not in keys and not key.isupper():  # KEY=VALUE is the placeholder
                problems.append(f"{where}: unknown config key '{key}' in --set {value}")
        solver_options = _solver_options(tokens)
        if token in ("-o", "--option") and "=" in value and "-o" in options and solver_options is not None:
            if value.split("=", 1)[0] not in solver_options:
                problems.append(f"{where}: the solver has no option '{value.split('=', 1)[0]}'")
    return problems


def check_text(text: str, where: str) -> list[str]:
    """Every problem with the commands, options and keys that ``text`` (a Markdown page) names."""
    commands = _cli()
    all_options = set().union(*(c.options for c in commands.values()))
    all_keys = set().union(*(set(c.keys) for c in commands.values()))
    problems = []
    for line in _code_lines(text):
        found = list(COMMAND.finditer(line))
        for n, match in enumerate(found):
            name = match[2]
            if name not in commands:
                problems.append(f"{where}: unknown command 'diffsampler {name}' in `{line.strip()}`")
                continue
            end = found[n + 1].start() if n + 1 < len(found) else len(line)
            info = commands[name]
            problems += _check_args(_tokens(line[match.end() : end]), info.options, set(info.keys), where)
        if not found and line.strip().startswith("--"):
            problems += _check_args(_tokens(line), all_options, all_keys, where)
    return problems


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_names_only_real_commands_options_and_keys(page: Path) -> None:
    assert check_text(page.read_text(), page.relative_to(ROOT).as_posix()) == []


def test_every_command_has_its_page_and_every_page_its_command() -> None:
    have = {p.stem for p in (DOCS / "commands").glob("*.md")}
    assert have == set(_cli())


def test_every_command_page_shows_its_generated_reference() -> None:
    for name in _cli():
        assert f"<!-- cli-reference: {name} -->" in (DOCS / "commands" / f"{name}.md").read_text(), name


@pytest.mark.parametrize(
    "text, problem",
    [
        ("```bash\ndiffsampler benchmrk --nfe 5\n```\n", "unknown command 'diffsampler benchmrk'"),
        ("Run `diffsampler sample --nfes 5`.", "unknown option --nfes"),
        ("```bash\ndiffsampler sample --model gmm-2d \\\n    --set nfes=3\n```\n", "unknown config key 'nfes'"),
        ("`diffsampler sample -o alpah=0.5`", "the solver has no option 'alpah'"),
        ("`diffsampler sample --solver euler -o order=2`", "the solver has no option 'order'"),
        ("Start over with `--frsh`.", "unknown option --frsh"),
        ("`diffsampler benchmark --set metric_option.rmse.samples=4`", "unknown config key 'metric_option'"),
        ("`diffsampler fid x.npz --num-samples 3`", "unknown option --num-samples"),
    ],
)
def test_the_checker_catches_a_wrong_name(text: str, problem: str) -> None:
    problems = check_text(text, "bad.md")
    assert len(problems) == 1 and problem in problems[0], problems


def test_the_checker_accepts_real_names() -> None:
    text = (
        "```bash\nOMP_NUM_THREADS=1 diffsampler --debug benchmark --nfe 3,5 --set metric_options.rmse.samples=4 \\\n"
        "    --fresh  # a comment --not-an-option\n```\n"
        "Then `diffsampler sample -o afs=true --set rho=5`, `--resume`,\n"
        "`diffsampler sample --solver dpmpp -o order=2`,\n"
        "and a page's own solver: `diffsampler sample --solver rk2 -o alpha=0.5`.\n"
        "From Python: `import diffsampler as ds; ds.sample(ds.load_model('gmm-2d'), solver='euler', nfe=3)`.\n"
    )
    assert check_text(text, "good.md") == []


def test_scripts_readme_lists_every_script_and_only_those() -> None:
    """scripts/README.md has one row per script (what it reproduces, which page cites it)."""
    listed = set(re.findall(r"^\| `([^`]+)` \|", (ROOT / "scripts" / "README.md").read_text(), re.M))
    have = {p.name for p in (ROOT / "scripts").iterdir() if p.suffix in (".py", ".sh")}
    assert listed == have
