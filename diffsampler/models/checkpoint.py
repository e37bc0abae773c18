"""Model checkpoints of the own U-Net: weights plus the metadata that says what they are.

A checkpoint is a ``torch.save`` dict holding only tensors, strings and numbers (so it loads with
``weights_only=True``, running no code): ``format``, ``version``, ``unet`` (the UNetConfig as a
dict), ``state_dict`` (stored in ``dtype``, e.g. float16 to halve the file), ``weights_sha256``
(over parameter names and stored bytes) and ``meta`` (training config, data hash, step, images
seen, training time, hardware). Loading checks all of it and refuses a mismatch in one line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path
from typing import Any, Mapping

import torch

from diffsampler.atomic import atomic_write_bytes
from diffsampler.config import build_config
from diffsampler.errors import UserError
from diffsampler.models.unet import UNetConfig, UNetDenoiser
from diffsampler.models.unet_flow import FlowUNetDenoiser
from diffsampler.torch_files import UnreadableTorchFile, load_plain

FORMAT = "diffsampler-unet"
VERSION = 2
LEGACY_NOISE_EMBEDDING_SCALE = {1: 1000.0}
"""The noise-embedding scale every checkpoint of an earlier version was trained with (its config lacks the key)."""
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, raw bytes) of every tensor, in name order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(state_dict[name].shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def checkpoint_bytes(model: UNetDenoiser | FlowUNetDenoiser, meta: Mapping[str, Any], dtype: str = "float16") -> bytes:
    """The serialised checkpoint of ``model`` with floating tensors stored in ``dtype``."""
    if dtype not in STORAGE_DTYPES:
        raise UserError(f"checkpoint dtype must be one of {', '.join(STORAGE_DTYPES)}, got '{dtype}'")
    state = {
        k: (v.detach().to("cpu", STORAGE_DTYPES[dtype]) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in model.state_dict().items()
    }
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "unet": dataclasses.asdict(model.config),
        "state_dict": state,
        "weights_sha256": weights_sha256(state),
        "meta": dict(meta),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def save_checkpoint(
    path: str | Path, model: UNetDenoiser | FlowUNetDenoiser, meta: Mapping[str, Any], dtype: str = "float16"
) -> None:
    """Write the checkpoint atomically (it appears complete or not at all)."""
    atomic_write_bytes(path, checkpoint_bytes(model, meta, dtype))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checked checkpoint dict; a missing, corrupt, foreign or tampered file is a UserError. The ``unet`` config
    of an earlier version is completed with the noise-embedding scale it was trained with, so every reader (loading,
    shipping) sees the config that reproduces the network."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model checkpoint not found: {path}")
    try:
        payload = load_plain(path)
    except UnreadableTorchFile as exc:
        raise UserError(
            f"cannot read checkpoint {path}: corrupt or not a diffsampler model checkpoint (a network of your own "
            f"runs as --model python:FILE.py:NAME); torch.load said: {exc}"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path} is not a diffsampler model checkpoint (no '{FORMAT}' format tag)")
    version = payload.get("version")
    if version != VERSION and version not in LEGACY_NOISE_EMBEDDING_SCALE:
        raise UserError(f"{path} has checkpoint version {version}; this diffsampler reads versions 1 to {VERSION}")
    state = payload.get("state_dict")
    if not isinstance(state, dict) or weights_sha256(state) != payload.get("weights_sha256"):
        raise UserError(f"checkpoint {path} is corrupt: its weights do not match the stored sha256")
    if version in LEGACY_NOISE_EMBEDDING_SCALE:
        payload["unet"] = {"noise_embedding_scale": LEGACY_NOISE_EMBEDDING_SCALE[version], **payload["unet"]}
    return payload


def load_checkpoint(path: str | Path) -> UNetDenoiser | FlowUNetDenoiser:
    """The float32 denoiser stored at ``path``, in eval mode; weights must match the stored config. A U-Net trained
    with the flow objective (its training config says so) loads as a flow-matching model.

    Its weights are channels-last (NHWC), so oneDNN runs its convolutions channels-last whatever the input's
    layout: 4-18% less CPU time per NFE in float32 and 2-6x less under bf16 autocast without native bf16 units, for
    the same outputs (scripts/bench_unet_cpu.py).
    """
    payload = read_checkpoint(path)
    cfg = build_config(UNetConfig, payload["unet"], f"checkpoint {path}")
    flow = (payload["meta"].get("train_config") or {}).get("objective") == "flow"
    model: UNetDenoiser | FlowUNetDenoiser = FlowUNetDenoiser(cfg) if flow else UNetDenoiser(cfg)
    expected = model.state_dict()
    state = payload["state_dict"]
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise UserError(f"checkpoint {path} does not match its own U-Net config (different layer names or shapes)")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    model.checkpoint_meta = payload["meta"]
    return model.to(memory_format=torch.channels_last).eval()
