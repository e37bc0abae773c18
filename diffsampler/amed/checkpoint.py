"""AMED predictor checkpoints: weights, sizes and the metadata that ties them to one sampling setup.

A checkpoint is a ``torch.save`` of plain data (loaded with ``weights_only=True``): the format tag,
the predictor config and state dict, and ``meta`` with the model description (class, sha256, sigma
range), the solver (``amed`` or ``amed-plugin``) and base solver, NFE, steps, AFS, schedule, rho, the
exact sigma grid, the multistep settings, the teacher, the training config and time. A predictor
is only used for the setup it was trained for; ``check_context`` refuses any other in one line.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from diffsampler.amed.predictor import AMEDPredictor, PredictorConfig
from diffsampler.artefacts import register_artefact_reader, register_prepare_hook
from diffsampler.atomic import atomic_write_bytes
from diffsampler.errors import UserError, shorten
from diffsampler.solvers.base import afs_on
from diffsampler.torch_files import UnreadableTorchFile, load_plain

FORMAT = "diffsampler-amed-predictor/1"


@dataclass
class PredictorCheckpoint:
    """A loaded predictor with the metadata of its training run."""

    predictor: AMEDPredictor
    meta: dict[str, Any]
    path: str = ""


def save_predictor(path: str | Path, predictor: AMEDPredictor, meta: Mapping[str, Any]) -> None:
    """Write the predictor (on the CPU) and its metadata atomically."""
    buffer = io.BytesIO()
    state = {k: v.detach().cpu().clone() for k, v in predictor.state_dict().items()}
    torch.save(
        {"format": FORMAT, "config": predictor.config.to_dict(), "state_dict": state, "meta": dict(meta)}, buffer
    )
    atomic_write_bytes(path, buffer.getvalue())


def load_predictor(path: str | Path) -> PredictorCheckpoint:
    """Read a checkpoint written by ``save_predictor``; a missing or foreign file is a UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"AMED predictor file not found: {p}; train one with `diffsampler train-amed`")
    try:
        data = load_plain(p)
    except UnreadableTorchFile as exc:
        raise UserError(f"{p} is not a readable AMED predictor checkpoint ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{p} is not an AMED predictor checkpoint of format {FORMAT}")
    predictor = AMEDPredictor(PredictorConfig(**data["config"]))
    predictor.load_state_dict(data["state_dict"])
    predictor.eval().requires_grad_(False)
    return PredictorCheckpoint(predictor, data["meta"], str(p))


def is_predictor(path: Path) -> bool:
    """True when ``path`` holds a checkpoint of ours (its format tag), readable or not by this version."""
    try:
        data = load_plain(path)
    except UnreadableTorchFile:
        return False
    return isinstance(data, dict) and str(data.get("format", "")).startswith(FORMAT.partition("/")[0])


def check_context(
    ckpt: PredictorCheckpoint, solver: str, options: Mapping[str, Any], context: Mapping[str, Any]
) -> None:
    """Refuse a predictor trained for another solver, base, model, NFE, AFS setting, schedule or sigma grid."""
    meta, name = ckpt.meta, Path(ckpt.path).name or "the predictor"
    if meta["solver"] != solver:
        wanted = meta["solver"] + (f" -o base={meta['base']}" if meta.get("base") else "")
        raise UserError(f"{name} was trained for solver {wanted}, not {solver}; use --solver {wanted}")
    base = options.get("base")
    if base is not None and base != meta.get("base"):
        raise UserError(
            f"{name} was trained for base solver {meta.get('base')}, not {base}; "
            f"use -o base={meta.get('base')} or train a predictor for {base}"
        )
    for key in ("max_order", "lower_order_final"):
        if options.get(key) is not None and options[key] != meta.get(key):
            raise UserError(
                f"{name} was trained with {key}={meta.get(key)}, not "
                f"{options[key]}; leave -o {key} out to use the trained setting"
            )
    model = context["model"]
    if model.get("sha256") != meta["model"].get("sha256"):
        raise UserError(
            f"{name} was trained for model {meta.get('model_name', meta['model'].get('class'))} "
            f"(sha256 {meta['model'].get('sha256', '')[:12]}), not this {model.get('class')} "
            f"(sha256 {model.get('sha256', '')[:12]}); train one for this model"
        )
    if afs_on(options.get("afs", False)) != bool(meta["afs"]):  # afs=mean may use an afs=true predictor (issue 36)
        raise UserError(
            f"{name} was trained with afs={str(meta['afs']).lower()}; pass -o afs={str(meta['afs']).lower()}"
        )
    if context["nfe"] != meta["nfe"]:
        raise UserError(
            f"{name} was trained for NFE {meta['nfe']}, not {context['nfe']}; "
            f"use --nfe {meta['nfe']} or train one for NFE {context['nfe']}"
        )
    if context["schedule"] != meta["schedule"]:
        raise UserError(
            f"{name} was trained on schedule {meta['schedule']}, not "
            f"{context['schedule']}; use --schedule {meta['schedule']}"
        )
    sigmas, trained = list(context["sigmas"]), list(meta["sigmas"])
    if len(sigmas) != len(trained) or not all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(sigmas, trained)):
        raise UserError(
            f"{name} was trained on the sigma grid {shorten([round(s, 4) for s in trained])}, "
            f"not {shorten([round(s, 4) for s in sigmas])}; "
            f"use sigma range [{meta['sigma_min']}, {meta['sigma_max']}] and rho {meta['rho']}"
        )


def prepare_amed(options: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """The `amed` prepare hook: load the predictor named in the options, refused unless trained for this setup."""
    ckpt = load_predictor(options["predictor"])
    check_context(ckpt, "amed", options, context)
    return {**options, "predictor": ckpt.predictor}


def prepare_amed_plugin(options: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """The `amed-plugin` prepare hook: as ``prepare_amed``, with the base solver and its multistep settings
    taken from the checkpoint."""
    ckpt = load_predictor(options["predictor"])
    check_context(ckpt, "amed-plugin", options, context)
    meta = ckpt.meta
    return {
        **options,
        "predictor": ckpt.predictor,
        "base": meta["base"],
        "max_order": meta.get("max_order"),
        "lower_order_final": meta.get("lower_order_final"),
    }


def register_plugin() -> None:
    """The built-in plugin (group ``diffsampler.solvers``) that loads AMED predictors for `amed` and `amed-plugin`."""
    register_prepare_hook("amed", prepare_amed)
    register_prepare_hook("amed-plugin", prepare_amed_plugin)
    for solver in ("amed", "amed-plugin"):
        register_artefact_reader(solver, lambda options: load_predictor(options["predictor"]))
