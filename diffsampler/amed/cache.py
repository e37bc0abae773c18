"""Predictors trained on demand and cached by their metadata (for benchmarks that train missing ones).

The cache key is the sha256 of the training config (less where it runs and writes: device, out,
name) and the model's content hash; the file is ``<out>/<default name>-<key[:12]>.pt``. A file there
is reused only when its stored config and model hash match again, so a changed model retrains.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from diffsampler.amed.checkpoint import load_predictor
from diffsampler.amed.config import AmedTrainConfig
from diffsampler.amed.train import StepReport, train_and_save
from diffsampler.config import build_config, identity_values
from diffsampler.models import load_model

VOLATILE = ("device", "out", "name")
"""Config fields that do not change what is trained."""


def training_identity(cfg: AmedTrainConfig, model_sha256: str) -> dict[str, Any]:
    """What determines a trained predictor: the config without ``VOLATILE`` fields, and the model's hash."""
    config = {k: v for k, v in identity_values(cfg).items() if k not in VOLATILE}
    return {"config": config, "model_sha256": model_sha256}


def cache_path(cfg: AmedTrainConfig, model_sha256: str) -> Path:
    """``<out>/<model>-<student>-nfe<N>-<schedule>[-afs]-<key>.pt``."""
    key = hashlib.sha256(json.dumps(training_identity(cfg, model_sha256), sort_keys=True).encode()).hexdigest()[:12]
    stem = Path(replace(cfg, name=None).file_name).stem
    return Path(cfg.out) / f"{stem}-{key}.pt"


def cached_predictor(cfg: AmedTrainConfig, report: Callable[[StepReport], None] | None = None) -> tuple[Path, bool]:
    """(path, trained_now): the cached predictor for ``cfg``, trained and written first when missing or stale."""
    cfg.validate()
    sha = load_model(cfg.model).content_hash()
    path = cache_path(cfg, sha)
    if path.is_file():
        meta = load_predictor(path).meta
        if training_identity(
            build_config(AmedTrainConfig, meta["config"]), meta["model"]["sha256"]
        ) == training_identity(cfg, sha):
            return path, False
    train_and_save(replace(cfg, name=path.stem), report)
    return path, True
