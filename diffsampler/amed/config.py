"""``diffsampler train-amed`` configuration (configs/amed/*.yaml), validated like every config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diffsampler.atomic import check_name
from diffsampler.config import RunSettings, check_nfe, check_samples, run_settings
from diffsampler.errors import UserError, unknown_choice
from diffsampler.models import model_label
from diffsampler.solvers.amed import DEFAULT_MAX_ORDER, STUDENTS

TEACHERS = ("heun", "dpm2", "euler")
"""One-step teachers: run interval by interval they give the same trajectory as one full solve."""


@dataclass
class AmedTrainConfig:
    """Distil an AMED predictor for one (model, student solver, NFE, schedule, AFS) setup."""

    model: str = "gmm-fmnist"
    student: str = "amed"
    nfe: int = 5
    afs: bool = True
    schedule: str | None = None
    rho: float | None = None
    sigma_min: float | None = None
    sigma_max: float | None = None
    teacher: str = "heun"
    teacher_m: int = 3
    num_latents: int = 10000
    run: RunSettings = run_settings(batch_size=128)
    lr: float = 5e-3
    epochs: int = 1
    balance_intervals: bool = False
    """Step on each interval's loss divided by its (detached) value, i.e. on log L_n, so that every interval
    weighs the same in the shared Adam moments. False: the paper's summed squared error (arXiv 2312.00094),
    whose first interval can be 100x the others and pull the shared head to r = 0 (see README)."""
    scale_dir: float = 0.0
    scale_time: float = 0.0
    max_order: int | None = None
    lower_order_final: bool = True
    hidden_dim: int = 128
    bottleneck_dim: int = 4
    out: str = "results/amed"
    name: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    """Options of the model: keywords for a python: model's NAME, and the toolbox's own (prediction, shape, ...)."""

    @property
    def solver(self) -> str:
        """The sampling solver the predictor is for."""
        return "amed" if self.student == "amed" else "amed-plugin"

    @property
    def resolved_schedule(self) -> str:
        """The given schedule, else logsnr for DPM-Solver++ and polynomial for the others (as in zju-pi/diff-sampler,
        amed-solver-main/launch.sh)."""
        return self.schedule or ("logsnr" if self.student == "dpmpp" else "polynomial")

    @property
    def resolved_max_order(self) -> int | None:
        return self.max_order or DEFAULT_MAX_ORDER.get(self.student)

    @property
    def file_name(self) -> str:
        """``<name>.pt``, by default <model>-<student>-nfe<N>-<schedule>[-afs].pt."""
        afs = "-afs" if self.afs else ""
        default = f"{model_label(self.model)}-{self.student}-nfe{self.nfe}-{self.resolved_schedule}{afs}"
        return f"{self.name or default}.pt"

    def validate(self) -> None:
        if self.student not in STUDENTS:
            raise unknown_choice("student solver", self.student, STUDENTS)
        if self.teacher not in TEACHERS:
            raise unknown_choice("teacher solver", self.teacher, TEACHERS)
        if self.nfe < 2:
            raise UserError(f"nfe must be at least 2 (one AMED step, or 3 with afs), got {self.nfe}")
        check_nfe(self.nfe)
        check_samples(self.num_latents, "num_latents")
        if self.name is not None:
            check_name(self.name + ".pt")
        if self.teacher_m < 1:
            raise UserError(f"teacher_m (extra teacher points per interval) must be at least 1, got {self.teacher_m}")
        for key in ("num_latents", "epochs", "hidden_dim", "bottleneck_dim"):
            if getattr(self, key) < 1:
                raise UserError(f"{key} must be at least 1, got {getattr(self, key)}")
        if not self.lr > 0:
            raise UserError(f"lr must be positive, got {self.lr}")
        self.run.validate()
        for key in ("scale_dir", "scale_time"):
            if not 0 <= getattr(self, key) < 1:
                raise UserError(f"{key} must be in [0, 1) (the scale lies in [1 - k, 1 + k]), got {getattr(self, key)}")
        if self.max_order is not None:
            top = DEFAULT_MAX_ORDER.get(self.student)
            if top is None or not 1 <= self.max_order <= top:
                raise UserError(
                    "max_order applies to students ipndm (1-4) and dpmpp "
                    f"(1-3), got {self.max_order} for {self.student}"
                )
