"""What a report shows per cell and metric: a status, a value and marks; and one metric's table of them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from diffsampler.metrics.bootstrap import interval_text

AFS_MARK = "†"
TIE_MARK = "*"
"""After a value statistically tied with the best of its column (``diffsampler.metrics.bootstrap.tied``)."""


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
    """One displayed value: ok (with value, and an interval where the record has one), n/a or failed (with a
    footnote number), or missing."""

    status: Status
    value: float | None = None
    footnote: int | None = None
    auto_afs: bool = False
    best: bool = False
    low: float | None = None
    high: float | None = None
    """The cell's 95% interval (None for records made without one)."""
    replicates: tuple[float, ...] | None = None
    """Bootstrap replicates under the run's shared resampling (the paired tie test)."""
    tied: bool = False
    """Not the best of its column, but statistically tied with it."""

    @property
    def has_value(self) -> bool:
        """True when the cell was scored (status ok with a value)."""
        return self.status is Status.OK and self.value is not None

    @property
    def has_interval(self) -> bool:
        return self.has_value and self.low is not None and self.high is not None

    def interval_text(self) -> str:
        """' ± h' (h half the width, 2 significant digits) for an interval about the value, else ' [low, high]';
        '' without an interval (``interval_text``)."""
        if not self.has_interval or self.value is None:
            return ""
        assert self.low is not None and self.high is not None
        return interval_text(self.value, self.low, self.high)

    def text(self, markdown: bool = False) -> str:
        if self.has_value:
            mark = ("\\" + TIE_MARK if markdown else TIE_MARK) if self.tied else ""
            core = f"{self.value:.4g}{self.interval_text()}" + (AFS_MARK if self.auto_afs else "") + mark
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

    def caption(self, num_samples: int) -> str:
        """What the table shows: '<summary> (lower is better); 256 samples of each cell.'"""
        better = "higher" if self.higher_is_better else "lower"
        return f"{self.summary} ({better} is better); {self.samples_text(num_samples)} of each cell."

    def samples_text(self, num_samples: int) -> str:
        """'256 samples', or 'the first 8 of 256 samples' for a metric that scores a subset."""
        if self.scored is None or self.scored >= num_samples:
            return f"{num_samples} samples"
        return f"the first {self.scored} of {num_samples} samples"
