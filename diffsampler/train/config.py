"""``diffsampler train-model`` settings: data, U-Net shape, EDM loss, optimiser, EMA, checkpoints.

Read from YAML with ``diffsampler.config.load_config`` (unknown keys refused, types checked).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

from diffsampler.atomic import check_name
from diffsampler.config import DEVICES, PRECISIONS, check_nfe, check_seed
from diffsampler.errors import UserError, shorten, unknown_choice
from diffsampler.models.checkpoint import STORAGE_DTYPES
from diffsampler.models.unet import UNetConfig
from diffsampler.solvers import get_solver

RESUMABLE_KEYS = frozenset(
    {
        "steps",
        "checkpoint_every",
        "log_every",
        "keep_checkpoints",
        "grid_samples",
        "grid_solver",
        "grid_nfe",
        "time_limit_minutes",
        "cpu_budget_minutes",
        "threads",
        "device",
    }
)
"""Keys a resumed run may change; every other key must equal the run's saved config."""

UNET_KEYS = tuple(f.name for f in dataclasses.fields(UNetConfig) if f.name not in ("image_channels", "image_size"))
"""The U-Net's shape keys, given flat in a training config; the image channels and size come from the data."""


OBJECTIVES = ("edm", "flow")


@dataclass
class TrainConfig:
    """One training run of the EDM-preconditioned U-Net (EDM, arXiv 2206.00364, section 5 and Table 1)."""

    name: str = "fmnist-p1"
    out: str = "results/train"
    data: str = "fashion-mnist"
    max_images: int | None = None
    image_size: int | None = None
    xflip: bool = False

    channels: int = 64
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])
    num_blocks: int = 2
    attention_resolutions: list[int] = field(default_factory=lambda: [8])
    head_channels: int = 32
    dropout: float = 0.1
    patch_size: int = 1
    sigma_data: float = 0.5
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    noise_embedding_scale: float = UNetConfig.noise_embedding_scale

    p_mean: float = -1.2
    p_std: float = 1.2
    objective: str = "edm"
    """edm: EDM's denoising loss on the preconditioned U-Net; flow: the rectified-flow velocity loss on the same
    U-Net, a flow-matching model (``diffsampler.train.objective``)."""
    logit_mean: float = 0.0
    logit_std: float = 1.0
    """The flow objective's logit-normal time sampling, logit(t) ~ N(logit_mean, logit_std^2) (SD3's 0 and 1)."""
    steps: int = 20000
    batch_size: int = 256
    lr: float = 2e-4
    lr_warmup_steps: int = 500
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-8
    grad_clip: float | None = 1.0
    ema_halflife_images: float = 500_000.0
    ema_rampup: float = 0.05

    init_from: str | None = None
    """Start a new run from the weights of a trained U-Net of the same shape (a built-in name such as fmnist-p1 or a
    checkpoint path) with a fresh optimiser; its earlier training is carried into the new run's totals."""
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    """Network precision while training: float32, bfloat16 (autocast) or auto: bfloat16 on CUDA and on CPUs with
    native bf16 matrix units (AMX or AVX512-BF16), float32 elsewhere (emulated bf16 ran 20x slower on an AVX2 CPU)."""
    channels_last: bool = True
    """Activations in NHWC order (oneDNN's preferred layout; 8% faster on the CPU here)."""
    threads: int | None = None
    """torch intra-op threads (None: torch's default); 1 lets several runs share a CPU without contention."""
    log_every: int = 100
    checkpoint_every: int = 2000
    keep_checkpoints: bool = True
    checkpoint_dtype: str = "float16"
    grid_samples: int = 64
    grid_solver: str = "heun"
    grid_nfe: int = 36
    time_limit_minutes: float | None = None
    cpu_budget_minutes: float | None = None
    """Stop once the run's training steps have used this much process CPU time, summed over resumes: an
    equal CPU budget stays equal when several runs share a loaded machine."""

    def validate(self) -> None:
        for key in ("steps", "batch_size", "log_every", "checkpoint_every", "grid_nfe"):
            if getattr(self, key) < 1:
                raise UserError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.max_images is not None and self.max_images < 1:
            raise UserError(f"max_images must be at least 1, got {self.max_images}")
        if self.image_size is not None and self.image_size < 1:
            raise UserError(f"image_size must be at least 1, got {self.image_size}")
        if self.grid_samples < 0 or self.lr_warmup_steps < 0 or self.seed < 0:
            raise UserError("grid_samples, lr_warmup_steps and seed must be non-negative")
        check_seed(self.seed)
        if self.lr <= 0 or self.p_std <= 0 or self.ema_halflife_images < 0 or self.ema_rampup < 0:
            raise UserError("lr and p_std must be positive, ema_halflife_images and ema_rampup non-negative")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise UserError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise UserError(f"grad_clip must be positive (or null for none), got {self.grad_clip}")
        for key in ("time_limit_minutes", "cpu_budget_minutes", "threads"):
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                raise UserError(f"{key} must be positive (or null for none), got {getattr(self, key)}")
        if self.precision not in PRECISIONS:
            raise unknown_choice("precision", self.precision, PRECISIONS)
        if self.device not in DEVICES:
            raise unknown_choice("device", self.device, DEVICES)
        if self.checkpoint_dtype not in STORAGE_DTYPES:
            raise unknown_choice("checkpoint_dtype", self.checkpoint_dtype, STORAGE_DTYPES)
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise UserError(f"name must be a plain folder name, got {shorten(self.name)}")
        check_name(self.name)
        check_nfe(self.grid_nfe, "grid_nfe")
        if self.objective not in OBJECTIVES:
            raise unknown_choice("training objective", self.objective, OBJECTIVES)
        if self.logit_std <= 0:
            raise UserError(f"logit_std must be positive, got {self.logit_std}")
        grid_solver = get_solver(self.grid_solver)
        grid_solver.steps_for_nfe(self.grid_nfe, grid_solver.resolve_options({}))
        if self.objective == "flow":
            grid_solver.check_start(float("inf"))  # flow models' sample grids run the flow schedule from t = 1

    def unet_config(self, image_channels: int, image_size: int) -> UNetConfig:
        """The U-Net shape for images of this size (the other shape keys are this config's), validated."""
        shape = {key: copy.deepcopy(getattr(self, key)) for key in UNET_KEYS}
        cfg = UNetConfig(image_channels=image_channels, image_size=image_size, **shape)
        cfg.validate()
        return cfg
