"""`diffsampler throughput`: our euler and dpmpp 2M against k-diffusion's samplers on one network (no timing is
asserted: timings belong in notes; what is checked is that both sides sample the same thing)."""

import importlib.util
import sys

import pytest
from typer.testing import CliRunner

from diffsampler.bench.throughput import PAIRS, ThroughputSettings, compare_throughput
from diffsampler.cli import app
from diffsampler.errors import UserError
from diffsampler.models import load_model

runner = CliRunner()


def test_ours_and_k_diffusion_sample_the_same_on_the_same_grid():
    settings = ThroughputSettings(batch_size=4, nfe=5, repeats=1, solver_only_rounds=1)
    result = compare_throughput(load_model("gmm-fmnist"), settings)
    assert [m.name for m in result.methods] == ["bare network", *(name for pair in PAIRS for name in pair)]
    assert all(m.cpu_seconds > 0 and m.samples_per_second > 0 for m in result.methods)
    for pair in result.pairs:
        # the same float32 arithmetic up to operation order on values of size sigma_max = 80: 1e-3 absolute is
        # about 100 ulp of 80 (a different grid or method would differ by orders of magnitude more)
        assert pair.max_difference < 1e-3, pair
        assert pair.ratio > 0 and pair.arithmetic_fraction_ours > 0


def test_the_command_prints_every_method_and_both_pairs():
    result = runner.invoke(
        app, ["throughput", "--model", "gmm-2d", "--batch-size", "4", "--nfe", "3", "--repeats", "1"]
    )
    assert result.exit_code == 0, result.output
    for name in ("bare network", "sample_euler (k-diffusion)", "sample_dpmpp_2m (k-diffusion)"):
        assert name in result.output
    assert result.output.count("the throughput of k-diffusion") == 2


def test_bad_settings_and_a_missing_k_diffusion_are_one_line_errors(monkeypatch):
    result = runner.invoke(app, ["throughput", "--model", "gmm-2d", "--precision", "fp16"])
    assert result.exit_code == 2 and "float32 or bfloat16" in result.output
    monkeypatch.delitem(sys.modules, "k_diffusion", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install k-diffusion"):
        compare_throughput(load_model("gmm-2d"), ThroughputSettings(batch_size=2, nfe=2, repeats=1))
