"""The examples of docs/extending.md ("Adding a solver / a metric / a schedule"), run as written there: each plugs in
with one function and one registration line. (The docs test skips these blocks: run here, the registration is
removed again afterwards so that no other test sees it.)"""

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from diffsampler.bench import metric_registry as bench_metrics
from diffsampler.cli import app
from diffsampler.models import load_model
from diffsampler.sampling import Generation, generate, plan_grid
from diffsampler.schedules import SCHEDULES, get_sigmas
from diffsampler.solvers import SOLVERS, get_solver

from helpers import SIGMA_MAX, SIGMA_MIN, latents, measured_order, single_gaussian

PAGE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
runner = CliRunner()


def page_example(marker: str) -> str:
    """The python block that follows ``<!-- marker -->`` (and the docs test's skip comment) on the page."""
    match = re.search(
        rf"<!-- {marker} -->\n(?:<!-- docs-test: skip .*? -->\n)?```python\n(.*?)```", PAGE.read_text(), re.S
    )
    assert match, f"no {marker} block in {PAGE.name}"
    return match.group(1)


@pytest.fixture
def rk2():
    exec(page_example("example-solver"), {"__name__": "docs_rk2"})
    yield get_solver("rk2")
    SOLVERS.pop("rk2")


@pytest.fixture
def mean_error():
    namespace = {"__name__": "docs_mean_error"}
    exec(page_example("example-metric"), namespace)
    yield namespace["mean_error"]
    bench_metrics.METRICS.pop("mean_error")


def test_example_solver_takes_its_options_from_its_signature(rk2):
    assert rk2.options == {"afs": False, "denoise_to_zero": False, "alpha": 2 / 3}


def test_example_solver_with_alpha_1_is_heun(rk2):
    """Same arithmetic up to the order of operations: float64 round-off (1e-12) on 8 steps."""
    model, x = single_gaussian(), latents(4, 8)
    sigmas = get_sigmas("polynomial", 8, SIGMA_MIN, SIGMA_MAX)
    torch.testing.assert_close(
        rk2.sample(model, x, sigmas, {"alpha": 1.0}),
        get_solver("heun").sample(model, x, sigmas),
        rtol=1e-12,
        atol=1e-12,
    )


@pytest.mark.parametrize("alpha", [2 / 3, 1.0])
def test_example_solver_is_second_order(rk2, alpha):
    """Least-squares slope on the closed-form Gaussian within 0.3 of 2 (the tolerance of test_fast_solver_order).
    (alpha = 1/2 measures 3.0 here: on this linear ODE the midpoint rule's h^2 error term happens to vanish.)"""
    order = measured_order(lambda m, x, s: rk2.sample(m, x, s, {"alpha": alpha}), [32, 64, 128, 256], "polynomial")
    assert abs(order - 2.0) < 0.3, order


def test_example_solver_runs_from_the_command_line_and_refuses_a_bad_alpha(rk2, tmp_path):
    ok = runner.invoke(
        app,
        [
            "sample",
            "--model",
            "gmm-2d",
            "--solver",
            "rk2",
            "--nfe",
            "8",
            "-o",
            "alpha=0.5",
            "--num-samples",
            "4",
            "--out",
            str(tmp_path),
            "--name",
            "rk2",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "rk2" / "meta.json").read_text())["nfe"] == 8  # generate checks the NFE used
    bad = runner.invoke(
        app, ["sample", "--model", "gmm-2d", "--solver", "rk2", "-o", "alpha=0", "--out", str(tmp_path)]
    )
    assert bad.exit_code == 2 and "rk2 option alpha must be a number in (0, 1], got 0" in bad.output


def test_example_metric_is_scored_by_the_benchmark(mean_error, tmp_path):
    args = [
        "benchmark",
        "--model",
        "gmm-2d",
        "--solvers",
        "heun",
        "--nfe",
        "8",
        "--metrics",
        "mean_error",
        "--num-samples",
        "64",
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
        "--name",
        "run",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (cell,) = json.loads((tmp_path / "run" / "results.json").read_text())["cells"]
    denoiser, spec = load_model("gmm-2d"), get_solver("heun")
    plan = plan_grid(spec, spec.resolve_options(), denoiser.sigma_min, denoiser.sigma_max, 8)
    job = Generation(denoiser, spec, spec.resolve_options(), plan, 0, 256, torch.device("cpu"), torch.float32)
    samples = generate(job, range(64))
    assert cell["values"]["mean_error"] == mean_error(
        samples,
        bench_metrics.MetricContext(
            denoiser, "gmm-2d", 0, 64, denoiser.sigma_max, denoiser.sigma_min, torch.device("cpu"), 256, None
        ),
    )
    # 64 samples of a unit-scale 2-D mixture: the sample mean is off by about std / 8, far below 1
    assert 0 < cell["values"]["mean_error"] < 1


@pytest.fixture
def polyexponential():
    exec(page_example("example-schedule"), {"__name__": "docs_polyexponential"})
    yield SCHEDULES["polyexponential"]
    SCHEDULES.pop("polyexponential")


def test_example_schedule_with_rho_1_is_logsnr_and_samples(polyexponential, tmp_path):
    """Both are exp of a linear ramp in log sigma: equal to float64 round-off (1e-12 relative)."""
    torch.testing.assert_close(
        get_sigmas("polyexponential", 7, SIGMA_MIN, SIGMA_MAX),
        get_sigmas("logsnr", 7, SIGMA_MIN, SIGMA_MAX),
        rtol=1e-12,
        atol=0,
    )
    grid = get_sigmas("polyexponential", 7, SIGMA_MIN, SIGMA_MAX, rho=2.0)
    assert grid.tolist() == pytest.approx([SIGMA_MAX, *grid[1:-1].tolist(), SIGMA_MIN], rel=1e-12)
    assert (grid[1:] < grid[:-1]).all()
    args = ["sample", "--model", "gmm-2d", "--solver", "euler", "--schedule", "polyexponential", "--nfe", "4"]
    result = runner.invoke(app, [*args, "--num-samples", "4", "--out", str(tmp_path), "--name", "p"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "p" / "meta.json").read_text())["schedule"] == "polyexponential"
