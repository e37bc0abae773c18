"""`precision: bfloat16`: a U-Net runs under bf16 autocast while the solver state stays float32; it is recorded with
the benchmark's results, and a model without a network refuses it in one line."""

import json

import pytest
import torch
from typer.testing import CliRunner

from diffsampler.bench.config import SolverEntry
from diffsampler.bench.learned import learned_schedules
from diffsampler.bench.runner import default_metrics
from diffsampler.bench.table import MetricTable
from diffsampler.cli import app
from diffsampler.config import RunSettings
from diffsampler.device import native_bf16
from diffsampler.errors import UserError
from diffsampler.metrics.reference import ReferenceCache
from diffsampler.models import load_model
from diffsampler.run_setup import setup_run

from unet_helpers import tiny_denoiser

runner = CliRunner()


def _noisy(model, sigma: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    x0 = torch.rand(4, *model.sample_shape, generator=gen) * 2 - 1
    return x0 + sigma * torch.randn(x0.shape, generator=gen)


def test_set_autocast_is_the_callers_autocast_and_leaves_the_state_float32():
    """The model's own autocast runs the same operations as a caller's autocast block, so the outputs are bitwise
    equal; the output and the AMED features come back float32; None restores the float32 network exactly, and
    without its own autocast the model keeps a caller's (the training loop's) instead of switching it off."""
    model = setup_run("fmnist-p1", "cpu", precision="bfloat16").denoiser
    x = _noisy(model, 0.5)
    with torch.no_grad():
        own = model(x, 0.5)
        features = model.last_features
        model.set_autocast(None)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            callers = model(x, 0.5)
        full = model(x, 0.5)
    assert own.dtype == torch.float32 and features is not None and features.dtype == torch.float32
    assert torch.equal(own, callers.float())
    assert not torch.equal(own, full)  # bf16 did run: 8 mantissa bits move D by about 1e-3 to 1e-2
    with torch.no_grad():
        assert torch.equal(full, load_model("fmnist-p1")(x, 0.5))


def test_a_model_without_a_network_refuses_bfloat16_in_one_line(tmp_path):
    result = runner.invoke(
        app, ["sample", "--model", "gmm-2d", "--nfe", "4", "--set", "precision=bfloat16", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "applies to diffsampler's U-Net models" in lines[0] and "float32" in lines[0]
    assert not any(tmp_path.iterdir())


def test_unknown_precision_is_refused_with_the_choices(tmp_path):
    result = runner.invoke(
        app, ["sample", "--model", "fmnist-p1", "--set", "precision=float16", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "bfloat16" in result.output


def test_benchmark_records_the_precision_and_refuses_to_mix_it(tmp_path):
    """A bf16 run folder records its precision; the same folder then refuses a float32 run (records of the two
    precisions are not comparable), and a float32 run's run.json has no precision key (older folders match)."""
    common = ["benchmark", "--model", "fmnist-p1", "--solvers", "euler", "--nfe", "3", "--num-samples", "2"]
    common += ["--metrics", "max_error", "--device", "cpu", "--out", str(tmp_path)]
    low = runner.invoke(app, [*common, "--name", "low", "--set", "precision=bfloat16"])
    assert low.exit_code == 0, low.output
    assert json.loads((tmp_path / "low" / "run.json").read_text())["precision"] == "bfloat16"
    mixed = runner.invoke(app, [*common, "--name", "low", "--set", "precision=float32"])
    assert mixed.exit_code == 2 and "precision" in mixed.output
    full = runner.invoke(app, [*common, "--name", "full", "--set", "precision=float32"])
    assert full.exit_code == 0, full.output
    assert "precision" not in json.loads((tmp_path / "full" / "run.json").read_text())


def test_a_learned_schedule_searches_in_the_benchmarks_precision(tmp_path):
    """The search reuses the benchmark's loaded network, so an entry's search settings cannot ask for another
    precision (the cache key would name a precision the teacher did not run in); refused before any search."""
    entry = SolverEntry("ipndm gits", "ipndm", {}, "gits", None, False, search={"precision": "bfloat16"})
    resolve = learned_schedules("gmm-2d", load_model("gmm-2d"), torch.device("cpu"), RunSettings(), tmp_path, None)
    with pytest.raises(UserError, match="precision"):
        resolve(entry, 4, {})
    assert not any(tmp_path.iterdir())


def test_the_reference_solution_runs_the_network_in_float32():
    """The rmse reference stands for the exact ODE solution: under precision bfloat16 it is still solved with the
    float32 network (bitwise the float32 solution; its cache key has no precision), and the model's bf16 autocast
    is back afterwards."""
    model = tiny_denoiser()
    full = ReferenceCache(model, 0, 80.0, 0.002, torch.device("cpu"), 2).get(2).solution
    model.set_autocast(torch.bfloat16)
    cache = ReferenceCache(model, 0, 80.0, 0.002, torch.device("cpu"), 2)
    assert torch.equal(cache.get(2).solution, full)
    assert model.autocast_dtype == torch.bfloat16 and model.describe()["autocast"] == "bfloat16"
    model.set_autocast(None)
    assert "autocast" not in model.describe()


def test_auto_is_bfloat16_only_for_a_network_on_native_bf16_hardware(monkeypatch):
    from diffsampler import run_setup

    unet, mixture, cpu = load_model("fmnist-p1"), load_model("gmm-2d"), torch.device("cpu")
    for native in (True, False):
        monkeypatch.setattr(run_setup, "native_bf16", lambda device, native=native: native)
        assert run_setup.resolve_precision("auto", unet.supports_autocast, cpu) == ("bfloat16" if native else "float32")
        assert run_setup.resolve_precision("auto", mixture.supports_autocast, cpu) == "float32"
        assert run_setup.resolve_precision("float32", unet.supports_autocast, cpu) == "float32"


def test_quick_start_defaults_run_the_shipped_network_with_network_metrics(tmp_path):
    """`diffsampler benchmark` with no model runs fmnist-p1, says so, scores fd_fmnist alone (rmse's reference would
    cost a third of the quick start), records its options and the precision auto resolved to (bf16 on a CPU with
    AMX or AVX512-BF16)."""
    args = ["benchmark", "--nfe", "3", "--solvers", "euler", "--num-samples", "3", "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    expected = "bfloat16" if native_bf16(torch.device("cpu")) else "float32"
    model_line = result.output[result.output.index("model fmnist-p1: Fashion-MNIST") :]
    assert f"network in {expected}" in " ".join(model_line.split()[:40])
    run = json.loads((tmp_path / "fmnist-p1" / "run.json").read_text())
    assert run.get("precision", "float32") == expected
    assert list(run["metrics"]) == ["fd_fmnist"] and run["metrics"]["fd_fmnist"]["options"] == {}


def test_network_defaults_and_the_subset_wording():
    assert default_metrics(load_model("fmnist-p1")) == {"fd_fmnist": {}}
    assert list(default_metrics(load_model("gmm-fmnist"))) == ["rmse", "max_error", "pixel_fd"]
    assert list(default_metrics(load_model("gmm-2d"))) == ["rmse", "max_error", "pixel_fd"]
    table = MetricTable("rmse", "", False, [], scored=8)
    assert table.samples_text(12) == "the first 8 of 12 samples" and table.samples_text(8) == "8 samples"
    assert MetricTable("fd_fmnist", "", False, []).samples_text(12) == "12 samples"
