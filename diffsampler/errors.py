"""The one exception type that means "the user gave bad input" (exit code 2, one line)."""

from __future__ import annotations

import contextlib
import re
import zipfile
from difflib import get_close_matches
from typing import Callable, Iterable, Iterator


class UserError(Exception):
    """Bad input from the user: the message is one line naming the problem and the fix."""


QUOTE_LIMIT = 200
"""The most characters of a user's value an error message quotes (``shorten``)."""
MESSAGE_LIMIT = 2000
"""The most characters of one error line (the CLI cuts longer ones with ``shorten``)."""


def shorten(value: object, limit: int = QUOTE_LIMIT, as_repr: bool = True) -> str:
    """``repr(value)`` (or ``str`` with ``as_repr=False``) as an error message quotes it: on one line, and cut in the
    middle with an ellipsis and the full length when longer than ``limit`` characters."""
    text = repr(value) if as_repr else str(value)
    text = text.replace("\n", "\\n")
    if len(text) <= limit:
        return text
    half = max(1, (limit - 1) // 2)
    return f"{text[:half]}…{text[-half:]} ({len(text):,} characters)"


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
"""A terminal colour or style code (torch's messages carry some)."""


def plain_message(exc: BaseException) -> str:
    """A library's exception as ``Type: message``, whole, on one line and without terminal colour codes."""
    text = " ".join(line.strip() for line in ANSI_ESCAPE.sub("", str(exc)).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def unknown_choice(kind: str, name: str, choices: Iterable[str]) -> UserError:
    """The error for a name that is not among the valid ones, with a "did you mean" hint."""
    options = list(choices)
    close = get_close_matches(name[:QUOTE_LIMIT], options, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return UserError(f"unknown {kind} '{shorten(name, as_repr=False)}'{hint}; choose one of: {', '.join(options)}")


UNREADABLE_FILE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)
"""What numpy (np.load), json and zipfile raise on a truncated or damaged file (JSONDecodeError is a ValueError)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a resumable run; the message says where it stopped and that the same command resumes."""


@contextlib.contextmanager
def resumable(where: Callable[[], str]) -> Iterator[None]:
    """Turn Ctrl-C inside the block into ``Interrupted("<where()>; run the same command to resume")``."""
    try:
        yield
    except KeyboardInterrupt as exc:
        if isinstance(exc, Interrupted):
            raise
        raise Interrupted(f"{where()}; run the same command to resume") from None
