"""Whether a predictor file already holds what a training config would train, so that ``train-amed`` can keep it.

A predictor is identified by its training config, less where it runs and writes (device, out, name), and by the
model's content hash. Training again with the same identity repeats the same work (the latents and the
initialisation are seeded), so a loop over many predictors can be rerun after an interruption and only trains the
missing or stale ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffsampler.amed.checkpoint import load_predictor
from diffsampler.amed.config import AmedTrainConfig
from diffsampler.config import build_config, identity_values
from diffsampler.errors import UserError
from diffsampler.models import load_model

VOLATILE = ("device", "out", "name")
"""Config fields that do not change what is trained."""


def training_identity(cfg: AmedTrainConfig, model_sha256: str) -> dict[str, Any]:
    """What determines a trained predictor: the config without ``VOLATILE`` fields, and the model's hash."""
    config = {k: v for k, v in identity_values(cfg).items() if k not in VOLATILE}
    return {"config": config, "model_sha256": model_sha256}


def is_current(path: Path, cfg: AmedTrainConfig) -> bool:
    """True when ``path`` holds a predictor trained with ``cfg``'s identity for the model as it is now; a missing,
    unreadable or older-format file is not current."""
    if not path.is_file():
        return False
    try:
        meta = load_predictor(path).meta
        stored = training_identity(build_config(AmedTrainConfig, meta["config"]), meta["model"]["sha256"])
    except (UserError, KeyError, TypeError):
        return False
    return stored == training_identity(cfg, load_model(cfg.model, options=cfg.model_options).content_hash())
