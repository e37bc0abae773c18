"""`diffsampler train-amed`: distillation with a rich progress bar (loss, mean/std of r and scales)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from diffsampler import distributed
from diffsampler.amed.config import AmedTrainConfig
from diffsampler.amed.train import StepReport, TrainResult, output_path, train_and_save


def describe_step(rep: StepReport) -> str:
    """One line: interval, loss, and mean +- std of r, c and a over the batch."""
    return (
        f"interval {rep.interval} loss {rep.loss:.4g}  r {rep.r_mean:.3f}+-{rep.r_std:.3f}  "
        f"c {rep.c_mean:.3f}+-{rep.c_std:.3f}  a {rep.a_mean:.3f}+-{rep.a_std:.3f}"
    )


def train_with_progress(cfg: AmedTrainConfig, console: Console) -> tuple[Path, TrainResult]:
    """Train and save, showing every optimizer step on ``console``."""
    output_path(cfg)
    columns = (TextColumn("[bold]AMED[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"))
    with Progress(*columns, console=console, transient=False, disable=distributed.launch_rank() != 0) as progress:
        task = progress.add_task("starting", total=None)

        def report(rep: StepReport) -> None:
            progress.update(task, completed=rep.step, total=rep.total, description=describe_step(rep))

        return train_and_save(cfg, report)
