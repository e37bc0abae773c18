"""Reading ``torch.save`` files of plain data (``weights_only=True``, running no code), with one error type.

torch warns on some foreign files before it refuses them (a pickle protocol other than 2, a TorchScript archive);
those warnings are silenced here, so that the caller's one-line refusal is all a user sees.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from diffsampler.errors import plain_message


class UnreadableTorchFile(Exception):
    """``torch.load`` refused the file; the message is torch's, whole, on one line, plain (``plain_message``)."""


def load_plain(path: str | Path) -> Any:
    """The data of a ``torch.save`` file loaded with ``weights_only=True`` on the CPU; any failure (missing, damaged,
    a pickle of objects, a TorchScript archive) is an ``UnreadableTorchFile`` and no library warning is printed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types (pickle, zip, EOF, runtime) on bad files
        raise UnreadableTorchFile(plain_message(exc)) from exc
