"""The training loop of `diffsampler train-model`: EDM loss, Adam, EMA, checkpoints, resume.

A run folder ``<out>/<name>/`` holds ``config.yaml``, ``loss.csv`` (one row per ``log_every`` steps),
``model.pt`` (the latest EMA checkpoint, the file to sample with), ``checkpoints/model-<step>.pt``,
``grid-<step>.png`` (samples of the EMA model at each checkpoint) and ``train-state.pt`` (weights,
EMA, Adam state and random-generator states in float32, for ``--resume``). Every file is written
atomically; ``train-state.pt`` is written last, so it never refers to a step whose files are missing.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml

from diffsampler.atomic import atomic_write_bytes, ensure_writable_dir
from diffsampler.device import hardware, resolve_device
from diffsampler.errors import UserError
from diffsampler.images import save_grid
from diffsampler.models.checkpoint import checkpoint_bytes
from diffsampler.models.unet import UNetDenoiser
from diffsampler.models.unet_flow import FlowUNetDenoiser
from diffsampler.progress import ProgressFn, report
from diffsampler.run_setup import resolve_precision
from diffsampler.sampling import Generation, GridPlan, generate, plan_grid
from diffsampler.schedules import FlowGrid
from diffsampler.solvers import SolverSpec, get_solver
from diffsampler.torch_files import UnreadableTorchFile, load_plain
from diffsampler.train.config import RESUMABLE_KEYS, TrainConfig
from diffsampler.train.data import TrainingData, training_data
from diffsampler.train.objective import edm_loss, ema_beta, ema_update, flow_loss, sample_flow_times, sample_sigmas

TrainedUNet = UNetDenoiser | FlowUNetDenoiser
DEFAULTS = dataclasses.asdict(TrainConfig())
"""Keys a run saved before they existed are taken at their default when resuming (objective: edm)."""

STATE_FORMAT = "diffsampler-train-state"
LOSS_HEADER = "step,images_seen,loss,images_per_second,seconds,cpu_seconds\n"


@dataclass(frozen=True)
class TrainOutcome:
    """Where the run is and how far it got."""

    folder: Path
    step: int
    images_seen: int
    last_loss: float | None
    seconds: float
    stopped_early: bool


@dataclass
class TrainState:
    """Everything that changes while training; saved whole for ``--resume``."""

    model: TrainedUNet
    ema: TrainedUNet
    optimizer: torch.optim.Adam
    generator: torch.Generator
    step: int = 0
    training_seconds: float = 0.0
    cpu_seconds: float = 0.0
    prior: dict[str, Any] | None = None
    """What the weights of ``init_from`` had been trained with (images seen, seconds, source)."""


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether training runs the network under bf16 autocast (``precision`` auto, float32 or bfloat16)."""
    return resolve_precision(precision, True, device) == "bfloat16"


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _new_state(cfg: TrainConfig, data: TrainingData, device: torch.device) -> TrainState:
    torch.manual_seed(cfg.seed)
    _, c, s, _ = data.images.shape
    unet = cfg.unet_config(c, s)
    model = (FlowUNetDenoiser(unet) if cfg.objective == "flow" else UNetDenoiser(unet)).to(device).train()
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    prior = None if cfg.init_from is None else _warm_start(model, cfg.init_from)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.lr, betas=(cfg.adam_betas[0], cfg.adam_betas[1]), eps=cfg.adam_eps
    )
    return TrainState(model, ema, optimizer, torch.Generator().manual_seed(cfg.seed), prior=prior)


def _warm_start(model: TrainedUNet, source: str) -> dict[str, Any]:
    """Copy the weights of the trained U-Net ``source`` into ``model``; returns its training totals."""
    from diffsampler.models import load_model

    trained = load_model(source)
    if type(trained) is not type(model) or trained.config != model.config:
        raise UserError(f"init_from '{source}' is not a U-Net of this run's shape; use a checkpoint of the same config")
    model.load_state_dict(trained.state_dict())
    meta = trained.checkpoint_meta or {}
    earlier = meta.get("prior") or {}
    keys = ("images_seen", "training_seconds", "cpu_seconds")
    totals = {k: float(meta.get(k) or 0.0) + float(earlier.get(k) or 0.0) for k in keys}
    return {**totals, "source": source}


def _check_resumable(saved: dict[str, Any], cfg: TrainConfig, data: TrainingData, path: Path) -> None:
    current = dataclasses.asdict(cfg)
    for key, value in current.items():
        if key not in RESUMABLE_KEYS and saved["config"].get(key, DEFAULTS.get(key)) != value:
            raise UserError(
                f"config key '{key}' is {value!r} but the run in {path.parent} used {saved['config'].get(key)!r}; "
                "resume with the same value or start a run under another name"
            )
    if saved["data_sha256"] != data.sha256:
        raise UserError(
            f"the training data differ from those of the run in {path.parent} (sha256 mismatch); "
            "resume with the same data"
        )


def _load_state(path: Path, cfg: TrainConfig, data: TrainingData, device: torch.device) -> TrainState:
    try:
        saved = load_plain(path)
    except UnreadableTorchFile as exc:
        raise UserError(f"cannot read {path}: corrupt training state ({exc})") from exc
    if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
        raise UserError(f"{path} is not a diffsampler training state")
    _check_resumable(saved, cfg, data, path)
    state = _new_state(cfg, data, device)
    state.model.load_state_dict(saved["model"])
    state.ema.load_state_dict(saved["ema"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.generator.set_state(saved["generator"])
    torch.set_rng_state(saved["torch_rng"])
    if device.type == "cuda" and saved.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(saved["cuda_rng"], device)
    state.step = int(saved["step"])
    state.training_seconds = float(saved["training_seconds"])
    state.cpu_seconds = float(saved.get("cpu_seconds", 0.0))
    state.prior = saved.get("prior")
    return state


def _save_state(path: Path, state: TrainState, cfg: TrainConfig, data: TrainingData, device: torch.device) -> None:
    payload = {
        "format": STATE_FORMAT,
        "config": dataclasses.asdict(cfg),
        "data_sha256": data.sha256,
        "step": state.step,
        "training_seconds": state.training_seconds,
        "cpu_seconds": state.cpu_seconds,
        "prior": state.prior,
        "model": {k: v.cpu() for k, v in state.model.state_dict().items()},
        "ema": {k: v.cpu() for k, v in state.ema.state_dict().items()},
        "optimizer": state.optimizer.state_dict(),
        "generator": state.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }
    atomic_write_bytes(path, _torch_bytes(payload))


def _truncate_log(path: Path, step: int) -> None:
    """Keep the header and the rows up to ``step`` (rows past the last saved state are redone)."""
    if not path.exists():
        atomic_write_bytes(path, LOSS_HEADER.encode())
        return
    rows = path.read_text().splitlines(keepends=True)
    kept = [r for r in rows[1:] if r.strip() and int(r.split(",", 1)[0]) <= step]
    atomic_write_bytes(path, (LOSS_HEADER + "".join(kept)).encode())


def _write_checkpoint(
    folder: Path, state: TrainState, cfg: TrainConfig, data: TrainingData, device: torch.device
) -> None:
    meta = {
        "step": state.step,
        "images_seen": state.step * cfg.batch_size,
        "data_source": cfg.data,
        "data_sha256": data.sha256,
        "train_config": dataclasses.asdict(cfg),
        "training_seconds": state.training_seconds,
        "cpu_seconds": state.cpu_seconds,
        "prior": state.prior,
        "precision": "bfloat16" if use_bf16(cfg.precision, device) else "float32",
        "hardware": hardware(device),
        "weights": "ema",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    blob = checkpoint_bytes(state.ema, meta, cfg.checkpoint_dtype)
    atomic_write_bytes(folder / "model.pt", blob)
    if cfg.keep_checkpoints:
        atomic_write_bytes(folder / "checkpoints" / f"model-{state.step:07d}.pt", blob)
    if cfg.grid_samples > 0:
        spec, options, plan = _grid_plan(cfg)
        job = Generation(state.ema, spec, options, plan, cfg.seed, 256, device, torch.float32)
        samples = generate(job, range(cfg.grid_samples))
        tmp = folder / f".grid-{state.step:07d}.tmp.png"
        save_grid(samples, tmp)
        os.replace(tmp, folder / f"grid-{state.step:07d}.png")
    _save_state(folder / "train-state.pt", state, cfg, data, device)


def _grid_plan(cfg: TrainConfig) -> tuple[SolverSpec, dict[str, Any], GridPlan]:
    """Solver, options and sigma grid of the sample grid drawn at each checkpoint."""
    spec = get_solver(cfg.grid_solver)
    options = spec.resolve_options({})
    if cfg.objective == "flow":
        return spec, options, plan_grid(spec, options, 1.0, 2.0, cfg.grid_nfe, "flow", flow_grid=FlowGrid())
    return spec, options, plan_grid(spec, options, cfg.sigma_min, cfg.sigma_max, cfg.grid_nfe)


def _train_step(state: TrainState, cfg: TrainConfig, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One Adam step on a batch drawn with replacement; noise and indices come from the run's generator."""
    gen = state.generator
    x0 = images[torch.randint(images.shape[0], (cfg.batch_size,), generator=gen).to(device)]
    if cfg.channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    if cfg.xflip:
        flip = (torch.rand(cfg.batch_size, generator=gen) < 0.5).to(device)
        x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
    flow = cfg.objective == "flow"
    if flow:
        level = sample_flow_times(cfg.batch_size, cfg.logit_mean, cfg.logit_std, gen)
    else:
        level = sample_sigmas(cfg.batch_size, cfg.p_mean, cfg.p_std, gen)
    noise = torch.randn(x0.shape, generator=gen).to(device)
    for group in state.optimizer.param_groups:
        group["lr"] = cfg.lr * min(1.0, (state.step + 1) / max(1, cfg.lr_warmup_steps))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(cfg.precision, device)):
        if isinstance(state.model, FlowUNetDenoiser):
            loss = flow_loss(state.model, x0, level, noise)
        else:
            loss = edm_loss(state.model, x0, level, noise, cfg.sigma_data)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
    state.optimizer.step()
    state.step += 1
    ema_update(
        state.ema,
        state.model,
        ema_beta(cfg.batch_size, state.step * cfg.batch_size, cfg.ema_halflife_images, cfg.ema_rampup),
    )
    return loss.detach()


def train(cfg: TrainConfig, resume: bool = False, progress: ProgressFn | None = None) -> TrainOutcome:
    """Train (or, with ``resume``, continue training) the run ``cfg.out/cfg.name`` up to ``cfg.steps``;
    ``progress`` hears of every logged step (loss, images per second)."""
    folder = Path(cfg.out) / cfg.name
    state_path = folder / "train-state.pt"
    if resume and not state_path.exists():
        raise UserError(f"nothing to resume: {state_path} does not exist (run without --resume to start)")
    if not resume and state_path.exists():
        raise UserError(f"a run already exists in {folder}; add --resume to continue it or choose another name")
    device = resolve_device(cfg.device)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    data = training_data(cfg.data, cfg.max_images, cfg.image_size)
    state = _load_state(state_path, cfg, data, device) if resume else _new_state(cfg, data, device)
    ensure_writable_dir(folder)
    atomic_write_bytes(folder / "config.yaml", yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False).encode())
    _truncate_log(folder / "loss.csv", state.step)
    return _run(folder, state, cfg, data, device, progress)


def _run(
    folder: Path,
    state: TrainState,
    cfg: TrainConfig,
    data: TrainingData,
    device: torch.device,
    progress: ProgressFn | None,
) -> TrainOutcome:
    images = data.images.to(device)
    limit = None if cfg.time_limit_minutes is None else 60.0 * cfg.time_limit_minutes
    started = time.perf_counter()
    window_start, window_losses, last_loss = time.perf_counter(), [], None
    stopped_early = False
    report(progress, state.step, cfg.steps, "starting")
    while state.step < cfg.steps:
        tic, cpu_tic = time.perf_counter(), time.process_time()
        window_losses.append(_train_step(state, cfg, images, device))
        state.training_seconds += time.perf_counter() - tic
        state.cpu_seconds += time.process_time() - cpu_tic
        done = state.step >= cfg.steps
        over_time = limit is not None and time.perf_counter() - started > limit
        over_budget = cfg.cpu_budget_minutes is not None and state.cpu_seconds >= 60.0 * cfg.cpu_budget_minutes
        stopped_early = (over_time or over_budget) and not done
        if state.step % cfg.log_every == 0 or done or stopped_early:
            last_loss = float(torch.stack(window_losses).mean())
            elapsed = time.perf_counter() - window_start
            rate = len(window_losses) * cfg.batch_size / max(elapsed, 1e-9)
            with (folder / "loss.csv").open("a") as log:
                log.write(
                    f"{state.step},{state.step * cfg.batch_size},{last_loss:.6g},{rate:.1f},"
                    f"{state.training_seconds:.2f},{state.cpu_seconds:.2f}\n"
                )
            report(progress, state.step, cfg.steps, f"loss {last_loss:.4f}  {rate:.0f} img/s")
            window_start, window_losses = time.perf_counter(), []
        if state.step % cfg.checkpoint_every == 0 or done or stopped_early:
            _write_checkpoint(folder, state, cfg, data, device)
            window_start = time.perf_counter()
        if stopped_early:
            break
    return TrainOutcome(
        folder, state.step, state.step * cfg.batch_size, last_loss, state.training_seconds, stopped_early
    )
