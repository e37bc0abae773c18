"""The benchmark's recommendation: per NFE, the best cell by the primary metric and the solvers tied with it.

The primary metric is the config's ``primary_metric``, or else the first metric of the run (``primary_metric``).
The recommended cell is the best value of the primary metric's NFE column; the tied ones are the cells whose
paired bootstrap interval of the difference to it holds 0 (``diffsampler.metrics.bootstrap.tied``), the marks the
tables carry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from diffsampler.bench.table import MetricTable
from diffsampler.errors import UserError
from diffsampler.metrics.bootstrap import interval_text


@dataclass(frozen=True)
class Recommendation:
    """One NFE budget's recommended row (label, its solver and schedule, value and interval) and its tied rows."""

    nfe: int
    metric: str
    label: str | None = None
    solver: str | None = None
    schedule: str | None = None
    value: float | None = None
    low: float | None = None
    high: float | None = None
    tied: list[str] = field(default_factory=list)
    """Labels statistically tied with the recommended row at this NFE."""
    tested: bool = False
    """Whether the recommended cell carries bootstrap replicates, so that ties could be tested."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        """One line: 'NFE 5: unipc (schedule logsnr), fd_fmnist 12.3 ± 0.41; tied: deis, dpmpp 3M'."""
        if self.label is None or self.value is None:
            return f"NFE {self.nfe}: no scored cell of {self.metric}"
        interval = "" if self.low is None or self.high is None else interval_text(self.value, self.low, self.high)
        solver = "" if self.solver == self.label else f"solver {self.solver}, "
        head = f"NFE {self.nfe}: {self.label} ({solver}schedule {self.schedule}), "
        head += f"{self.metric} {self.value:.4g}{interval}"
        if not self.tested:
            return head + "; ties not tested (no bootstrap replicates in its record)"
        return head + ("; tied: " + ", ".join(self.tied) if self.tied else "; no solver tied with it")


def primary_metric(configured: str | None, names: list[str]) -> str:
    """``configured`` (it must be one of the run's metrics ``names``), or else the first of ``names``."""
    if configured is None:
        return names[0]
    if configured not in names:
        raise UserError(
            f"primary_metric '{configured}' is not among the metrics of this run ({', '.join(names)}); "
            "name one of them or leave primary_metric out for the first"
        )
    return configured


def recommend(
    table: MetricTable, budgets: list[int], cells: dict[tuple[str, int], dict[str, Any]]
) -> list[Recommendation]:
    """Per budget, the best row of ``table``'s column and the rows tied with it; ``cells`` by (label, NFE) give the
    solver and schedule."""
    out = []
    for col, nfe in enumerate(budgets):
        best = [(label, row[col]) for label, row in table.rows if row[col].best]
        if not best:
            out.append(Recommendation(nfe, table.name))
            continue
        label, entry = best[0]
        cell = cells.get((label, nfe), {})
        tied = [other for other, row in table.rows if row[col].tied or (row[col].best and other != label)]
        out.append(
            Recommendation(
                nfe,
                table.name,
                label,
                cell.get("solver"),
                cell.get("schedule"),
                entry.value,
                entry.low,
                entry.high,
                tied,
                entry.replicates is not None,
            )
        )
    return out
