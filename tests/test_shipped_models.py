"""The trained Fashion-MNIST U-Nets shipped in the package: load by name, match the manifest, sample, refuse damage."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from diffsampler.cli import app
from diffsampler.digest import file_sha256
from diffsampler.errors import UserError
from diffsampler.models import MODELS, load_model, register_model
from diffsampler.models.checkpoint import read_checkpoint
from diffsampler.models.shipped import read_manifest, shipped_builder, trained_dir, verified_path
from diffsampler.schedules import get_sigmas
from diffsampler.solvers import SOLVERS, get_solver

MANIFEST = read_manifest()
NAMES = sorted(MANIFEST)
P4_RECORD = Path(__file__).parents[1] / "results/models/fmnist-p4.json"
"""The unshipped P = 4: its manifest entry, beside its checkpoint."""
P4_LONG_RECORD = P4_RECORD.with_name("fmnist-p4-long.json")
"""The same run trained twice as long (docs/results/trained-models.md: how FID falls with images seen)."""
TRAINING_FREE = sorted(name for name, spec in SOLVERS.items() if spec.training_free)


def test_p1_and_p2_are_shipped_and_registered_and_p4_is_kept_by_path():
    """P = 4 (Inception FID-5k 97 > 50) is not shipped; its checkpoint and record stay in results/models/."""
    assert NAMES == ["fmnist-p1", "fmnist-p2"]
    assert [MANIFEST[n]["unet"]["patch_size"] for n in NAMES] == [1, 2]
    assert all(name in MODELS for name in NAMES) and "fmnist-p4" not in MODELS
    p4 = json.loads(P4_RECORD.read_text())
    checkpoint = verified_path("fmnist-p4", p4, P4_RECORD.parent)  # exists and matches the record's sha256
    assert p4["unet"]["patch_size"] == 4
    widths = {(e["unet"]["channels"], tuple(e["unet"]["channel_mult"])) for e in [*MANIFEST.values(), p4]}
    assert len(widths) == 1, "the three models must share one base width"
    assert read_checkpoint(checkpoint)["weights_sha256"] == p4["weights_sha256"]
    assert load_model(str(checkpoint)).sample_shape == (1, 32, 32)


def test_the_longer_p4_continues_the_two_hour_run():
    """Its record and file agree, and it is the P = 4 run (same U-Net and data) with more steps."""
    p4, longer = (json.loads(path.read_text()) for path in (P4_RECORD, P4_LONG_RECORD))
    verified_path("fmnist-p4-long", longer, P4_LONG_RECORD.parent)
    assert longer["unet"] == p4["unet"] and longer["data_sha256"] == p4["data_sha256"]
    assert longer["step"] > p4["step"] and longer["images_seen"] == longer["step"] * p4["train_config"]["batch_size"]


@pytest.mark.parametrize("name", NAMES)
def test_files_match_the_manifest_and_stay_small(name):
    entry = MANIFEST[name]
    path = trained_dir() / entry["file"]
    assert file_sha256(path) == entry["sha256"]
    assert read_checkpoint(path)["weights_sha256"] == entry["weights_sha256"]
    assert path.stat().st_size < 8 * 2**20
    for key in ("data_sha256", "step", "images_seen", "training_seconds", "cpu_seconds", "hardware", "final_loss"):
        assert entry[key] is not None, key


@pytest.mark.parametrize("name", NAMES)
def test_features_have_the_documented_shape(name):
    model = load_model(name)
    cfg = model.config
    x = torch.randn(3, *model.sample_shape)
    feats = model.features(x, 1.0)
    assert feats.shape == (3, cfg.channels * cfg.channel_mult[-1])
    assert model.calls == 1


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("solver", TRAINING_FREE)
def test_every_training_free_solver_samples_at_nfe_5(name, solver):
    model = load_model(name)
    spec = get_solver(solver)
    options = spec.resolve_options({"afs": True} if spec.evals_per_step > 1 else {})
    steps = spec.steps_for_nfe(5, options)
    sigmas = get_sigmas(spec.default_schedule, steps, model.sigma_min, model.sigma_max)
    x = torch.randn(2, *model.sample_shape, generator=torch.Generator().manual_seed(0)) * model.sigma_max
    with torch.no_grad():
        out = spec.sample(model, x, sigmas, options)
    assert torch.isfinite(out).all() and model.calls == 5


@pytest.mark.parametrize("name", NAMES)
def test_converged_samples_stay_in_the_data_range(name):
    """DPM-Solver++(3M) at 20 NFE: like Fashion-MNIST (padded to 32x32, 64% of pixels darker than -0.9), a trained
    model's samples are mostly background (56-58% measured on the shipped models; bound 40%), while an untrained
    U-Net's are not (4% measured); and 95% of their pixels lie within [-1.1, 1.1] (97-99.8% measured)."""
    model = load_model(name)
    spec = get_solver("dpmpp")
    options = spec.resolve_options({})
    sigmas = get_sigmas(spec.default_schedule, spec.steps_for_nfe(20, options), model.sigma_min, model.sigma_max)
    x = torch.randn(8, *model.sample_shape, generator=torch.Generator().manual_seed(0)) * model.sigma_max
    with torch.no_grad():
        out = spec.sample(model, x, sigmas, options)
    assert (out < -0.9).float().mean() > 0.4
    assert (out.abs() < 1.1).float().mean() > 0.95


def test_bf16_autocast_agrees_with_float32():
    """D(x, sigma) under CPU bf16 autocast against float32. bf16 keeps 8 mantissa bits (relative rounding 2^-9 per
    operation); through about 40 layers the output of D at moderate sigma moved by at most a few 1e-2 here, so the
    bound is 0.1 in the [-1, 1] pixel scale (and a mean error under 0.02), far below the difference between images."""
    model = load_model("fmnist-p1")
    gen = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, *model.sample_shape, generator=gen) * 2 - 1
    for sigma in (0.05, 0.5, 5.0):
        x = x0 + sigma * torch.randn(x0.shape, generator=gen)
        with torch.no_grad():
            ref = model(x, sigma)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = model(x, sigma)
        diff = (low.float() - ref).abs()
        assert diff.max() < 0.1 and diff.mean() < 0.02, (sigma, float(diff.max()))


def _damaged_copy(tmp_path, name, damage):
    folder = tmp_path / "trained"
    shutil.copytree(trained_dir(), folder)
    damage(folder / MANIFEST[name]["file"])
    return folder


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_flip_a_byte, lambda p: p.unlink(), lambda p: p.write_bytes(p.read_bytes()[:100])])
def test_damaged_or_missing_file_is_refused_in_one_line(tmp_path, monkeypatch, damage):
    folder = _damaged_copy(tmp_path, "fmnist-p2", damage)
    with pytest.raises(UserError, match="built-in model 'fmnist-p2' is (corrupt|missing)"):
        shipped_builder("fmnist-p2", MANIFEST["fmnist-p2"], folder)()
    monkeypatch.setitem(MODELS, "fmnist-p2", MODELS["fmnist-p2"])
    register_model("fmnist-p2", shipped_builder("fmnist-p2", MANIFEST["fmnist-p2"], folder), "damaged copy")
    result = CliRunner().invoke(
        app, ["sample", "--model", "fmnist-p2", "--solver", "euler", "--nfe", "2", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "reinstall diffsampler" in result.output and len(result.output.strip().splitlines()) == 1
