"""How engines report progress: they call a ``ProgressFn`` with ``ProgressEvent``s and never draw.

The command line turns the events into progress bars (``diffsampler.terminal``); a library user passes any
callable or None. Keeping the terminal out of the engines keeps them usable without one (and rich out of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ProgressEvent:
    """``done`` of ``total`` units (None: unknown) finished; ``text`` says what runs now."""

    done: int
    total: int | None
    text: str = ""


ProgressFn = Callable[[ProgressEvent], None]


def report(progress: ProgressFn | None, done: int, total: int | None, text: str = "") -> None:
    """Send one event when a callback was given."""
    if progress is not None:
        progress(ProgressEvent(done, total, text))
