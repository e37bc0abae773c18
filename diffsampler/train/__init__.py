"""Training of the own U-Net denoisers (EDM loss, Adam, EMA, checkpoints, resume)."""

from diffsampler.train.config import TrainConfig
from diffsampler.train.loop import TrainOutcome, train

__all__ = ["TrainConfig", "TrainOutcome", "train"]
