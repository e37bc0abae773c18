"""What a report shows per cell and metric: a status, a value and marks; and one metric's table of them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

AFS_MARK = "†"


class Status(str, Enum):
    """The state of one (solver, NFE) cell of a metric table; the value is what reports write."""

    OK = "ok"
    NA = "n/a"
    FAILED = "failed"
    MISSING = "missing"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Entry:
    """One displayed value: ok (with value), n/a or failed (with a footnote number), or missing."""

    status: Status
    value: float | None = None
    footnote: int | None = None
    auto_afs: bool = False
    best: bool = False

    @property
    def has_value(self) -> bool:
        """True when the cell was scored (status ok with a value)."""
        return self.status is Status.OK and self.value is not None

    def text(self, markdown: bool = False) -> str:
        if self.has_value:
            core = f"{self.value:.4g}" + (AFS_MARK if self.auto_afs else "")
            return f"**{core}**" if self.best and markdown else core
        if self.status in (Status.NA, Status.FAILED):
            return f"{self.status}[^{self.footnote}]" if markdown else f"{self.status} [{self.footnote}]"
        return "-"


@dataclass(frozen=True)
class MetricTable:
    """Rows (solver labels) by columns (NFE budgets) of one metric."""

    name: str
    summary: str
    higher_is_better: bool
    rows: list[tuple[str, list[Entry]]]
    scored: int | None = None
    """How many samples of each cell the metric scores (the first ones), None for all."""

    def samples_text(self, num_samples: int) -> str:
        """'256 samples', or 'the first 8 of 256 samples' for a metric that scores a subset."""
        if self.scored is None or self.scored >= num_samples:
            return f"{num_samples} samples"
        return f"the first {self.scored} of {num_samples} samples"
