"""``diffsampler compute-ems`` configuration (configs/ems/*.yaml), validated like every config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diffsampler.config import DEVICES, MAX_GRID, check_limit, check_samples, check_seed
from diffsampler.errors import UserError, unknown_choice


@dataclass
class EmsConfig:
    """DPM-Solver-v3's statistics of one model (arXiv 2310.13268, section 3.4) on a grid uniform in lambda.

    ``data`` None estimates from samples of the model itself; ``out`` None writes to
    results/ems/<model>/<sigma_min>_<sigma_max>_<grid>_<num_data>.
    """

    model: str = "gmm-fmnist"
    data: str | None = None
    grid: int = 120
    num_data: int = 1024
    batch_size: int = 256
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    """Options of the model: keywords for a python: model's NAME, and the toolbox's own (prediction, shape, ...)."""

    def validate(self) -> None:
        if self.grid < 2:
            raise UserError(f"grid must be at least 2 intervals, got {self.grid}")
        check_limit("grid", self.grid, MAX_GRID, "intervals of the lambda grid; each costs num_data JVPs")
        check_samples(self.num_data, "num_data")
        if self.num_data < 2 or self.batch_size < 1:
            raise UserError(
                f"num_data must be at least 2 and batch_size at least 1, got {self.num_data} and {self.batch_size}"
            )
        check_seed(self.seed)
        if self.device not in DEVICES:
            raise unknown_choice("device", self.device, DEVICES)
