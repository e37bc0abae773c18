"""`diffsampler train-model` on the CPU at toy size: the loss falls, checkpoints sample, resume is exact."""

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from diffsampler.cli import app
from diffsampler.errors import UserError
from diffsampler.models import load_model
from diffsampler.sampling import Generation, generate, plan_grid
from diffsampler.solvers import SOLVERS
from diffsampler.train import TrainConfig, train

from unet_helpers import one_thread, write_blob_images  # noqa: F401  (autouse fixture)

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

TINY = dict(
    channels=8,
    channel_mult=[1, 2],
    num_blocks=1,
    attention_resolutions=[4],
    head_channels=8,
    dropout=0.0,
    batch_size=16,
    lr=2e-3,
    lr_warmup_steps=10,
    ema_halflife_images=500,
    grid_samples=4,
    grid_nfe=6,
    device="cpu",
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_blob_images(tmp_path_factory.mktemp("data") / "blobs.npz")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """120 steps of batch 16 on 64 8x8 images (about 15 s on a loaded 2-core CPU), checkpoints at 60 and 120."""
    torch.set_num_threads(1)
    cfg = TrainConfig(
        name="tiny",
        out=str(tmp_path_factory.mktemp("runs")),
        data=data,
        steps=120,
        log_every=20,
        checkpoint_every=60,
        **TINY,
    )
    return train(cfg)


def test_loss_falls(trained):
    """Mean EDM loss over steps 1-20 vs 101-120; on this data it falls from about 1.7 to about 0.7, so a
    factor 0.8 leaves a wide margin for seed and platform noise while a model that learns nothing fails."""
    rows = list(csv.DictReader((trained.folder / "loss.csv").open()))
    assert [int(r["step"]) for r in rows] == [20, 40, 60, 80, 100, 120]
    assert float(rows[-1]["loss"]) < 0.8 * float(rows[0]["loss"])
    assert trained.step == 120 and trained.images_seen == 120 * 16


def test_run_folder_holds_checkpoints_grids_and_state(trained):
    names = {p.name for p in trained.folder.iterdir()}
    assert {"config.yaml", "loss.csv", "model.pt", "train-state.pt", "grid-0000060.png", "grid-0000120.png"} <= names
    assert sorted(p.name for p in (trained.folder / "checkpoints").iterdir()) == [
        "model-0000060.pt",
        "model-0000120.pt",
    ]
    assert not [n for n in names if "tmp" in n]
    meta = load_model(str(trained.folder / "model.pt")).checkpoint_meta
    assert meta["step"] == 120 and meta["weights"] == "ema" and len(meta["data_sha256"]) == 64
    assert meta["train_config"]["steps"] == 120


@pytest.mark.parametrize("name", sorted(n for n, s in SOLVERS.items() if s.training_free))
def test_checkpoint_samples_through_every_solver(trained, name):
    model = load_model(str(trained.folder / "model.pt"))
    spec = SOLVERS[name]
    options = spec.resolve_options({})
    plan = plan_grid(spec, options, model.sigma_min, model.sigma_max, spec.nfe(3, options))
    samples = generate(Generation(model, spec, options, plan, 0, 3, torch.device("cpu"), torch.float32), range(3))
    assert samples.shape == (3, 1, 8, 8)


def _state(folder):
    return torch.load(folder / "train-state.pt", weights_only=True)


def test_resume_continues_exactly(tmp_path, data):
    """20 steps straight and 10 + 10 with --resume give bit-identical weights, EMA and Adam state (CPU,
    one thread, every random draw from saved generator states)."""
    base = dict(data=data, log_every=5, checkpoint_every=10, **TINY)
    straight = train(TrainConfig(name="straight", out=str(tmp_path), steps=20, **base))
    train(TrainConfig(name="split", out=str(tmp_path), steps=10, **base))
    half = _state(tmp_path / "split")
    assert half["step"] == 10
    resumed = train(TrainConfig(name="split", out=str(tmp_path), steps=20, **base), resume=True)
    assert resumed.step == 20
    a, b = _state(straight.folder), _state(resumed.folder)
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    opt_a, opt_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(opt_a[i][s], opt_b[i][s]) for i in opt_a for s in opt_a[i])
    steps = [int(r["step"]) for r in csv.DictReader((resumed.folder / "loss.csv").open())]
    assert steps == [5, 10, 15, 20]


def test_resume_refuses_a_changed_config(tmp_path, data):
    cfg = TrainConfig(
        name="run",
        out=str(tmp_path),
        data=data,
        steps=2,
        log_every=1,
        checkpoint_every=2,
        **{**TINY, "grid_samples": 0},
    )
    train(cfg)
    with pytest.raises(UserError, match="already exists"):
        train(cfg)
    with pytest.raises(UserError, match="'lr'"):
        train(dataclasses.replace(cfg, lr=1e-3, steps=4), resume=True)
    with pytest.raises(UserError, match="nothing to resume"):
        train(dataclasses.replace(cfg, name="other"), resume=True)


def test_cli_trains_and_the_checkpoint_samples(tmp_path, data):
    overrides = [
        item
        for k, v in {
            **TINY,
            "data": data,
            "image_size": 8,
            "out": str(tmp_path),
            "steps": 3,
            "log_every": 1,
            "checkpoint_every": 3,
        }.items()
        for item in ("--set", f"{k}={v}")
    ]
    result = runner.invoke(app, ["train-model", "--config", str(ROOT / "configs/train/tiny-cpu.yaml"), *overrides])
    assert result.exit_code == 0, result.output
    model = tmp_path / "tiny-cpu" / "model.pt"
    result = runner.invoke(
        app,
        [
            "sample",
            "--model",
            str(model),
            "--solver",
            "euler",
            "--nfe",
            "2",
            "--num-samples",
            "2",
            "--out",
            str(tmp_path),
            "--name",
            "s",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "s" / "samples.npz")["samples"].shape == (2, 1, 8, 8)
    again = runner.invoke(app, ["train-model", "--config", str(ROOT / "configs/train/tiny-cpu.yaml"), *overrides])
    assert again.exit_code == 2 and "already exists" in again.output


def test_cli_refuses_unknown_key_naming_its_source(tmp_path):
    result = runner.invoke(app, ["train-model", "--set", "chanels=8"])
    assert result.exit_code == 2 and "unknown key in --set 'chanels' (did you mean 'channels'?)" in result.output
    config = tmp_path / "t.yaml"
    config.write_text("steps: 3\nchanels: 8\n")
    result = runner.invoke(app, ["train-model", "--config", str(config), "--set", "steps=4"])
    assert result.exit_code == 2 and f"unknown key in {config} 'chanels'" in result.output.replace("\n", "")


def test_grid_budget_the_solver_cannot_meet_is_refused_before_training():
    with pytest.raises(UserError, match="heun uses 2 NFE per step"):
        TrainConfig(grid_solver="heun", grid_nfe=35).validate()


def test_checkpoint_feeds_the_benchmark(trained, tmp_path):
    result = runner.invoke(
        app,
        [
            "benchmark",
            "--model",
            str(trained.folder / "model.pt"),
            "--nfe",
            "3,4",
            "--solvers",
            "euler,ipndm",
            "--num-samples",
            "4",
            "--metrics",
            "rmse",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / f"{trained.folder.name}-model"
    records = sorted((folder / "records").rglob("rmse.json"))
    assert len(records) == 4
    assert all(json.loads(p.read_text())["value"] is not None for p in records)


def test_warm_start_copies_weights_and_carries_totals(trained, data, tmp_path):
    """init_from starts from the trained EMA weights (so the first loss is the trained model's, far below a fresh
    start's) and adds the source's images and CPU time to the new run's totals; another shape is refused."""
    source = str(trained.folder / "model.pt")
    cfg = TrainConfig(
        name="warm",
        out=str(tmp_path),
        data=data,
        steps=2,
        log_every=1,
        checkpoint_every=2,
        init_from=source,
        **{**TINY, "lr_warmup_steps": 1000, "grid_samples": 0},
    )
    warm = train(cfg)
    fresh = train(dataclasses.replace(cfg, name="fresh", init_from=None))
    first = [float(next(csv.DictReader((r.folder / "loss.csv").open()))["loss"]) for r in (warm, fresh)]
    assert first[0] < 0.8 * first[1]
    meta = load_model(str(warm.folder / "model.pt")).checkpoint_meta
    assert meta["prior"]["images_seen"] == 120 * 16 and meta["prior"]["source"] == source
    assert meta["prior"]["cpu_seconds"] > 0
    with pytest.raises(UserError, match="not a U-Net of this run's shape"):
        train(dataclasses.replace(cfg, name="other", init_from=source, channels=16))


def test_the_unet_shape_comes_from_the_training_configs_own_keys():
    """TrainConfig gives every U-Net shape key flat (the YAML files and shipped manifests use them); the U-Net
    config is built from them and the data's image shape."""
    from diffsampler.train.config import UNET_KEYS

    cfg = TrainConfig(channels=16, channel_mult=[1, 2], dropout=0.2, patch_size=2)
    unet = cfg.unet_config(3, 16)
    assert (unet.image_channels, unet.image_size) == (3, 16)
    assert all(getattr(unet, key) == getattr(cfg, key) for key in UNET_KEYS)
    assert unet.channel_mult is not cfg.channel_mult


def test_hardware_line_names_the_cpu_model_and_its_bf16_units(monkeypatch):
    """The manifest's hardware line carries the CPU model and the bf16 units that decide `precision: auto`."""
    from diffsampler import device

    info = {"model name": "Test CPU 9000", "flags": "fpu sse2 avx512_bf16 amx_tile amx_bf16"}
    monkeypatch.setattr(device, "_cpuinfo", lambda key: info.get(key, ""))
    line = device.hardware(torch.device("cpu"))
    assert line.startswith("CPU Test CPU 9000 (amx_bf16, avx512_bf16) x")
    assert device.native_bf16(torch.device("cpu"))
    info["flags"] = "fpu sse2 avx2"
    assert "bf16" not in device.hardware(torch.device("cpu"))
    assert not device.native_bf16(torch.device("cpu"))
