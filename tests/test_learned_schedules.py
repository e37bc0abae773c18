"""Schedule files, AYS, GITS (arXiv 2405.11326) and LD3 (arXiv 2405.15506)."""

import csv
import itertools
import json
import logging
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from diffsampler.cli import app
from diffsampler.errors import UserError
from diffsampler.metrics.reference import gaussian_flow
from diffsampler.models import GaussianMixture, load_model
from diffsampler.sampling import plan_grid
from diffsampler.schedule_file import ScheduleArtefact, read_schedule, write_schedule
from diffsampler.schedules import AYS_SIGMAS, get_sigmas
from diffsampler.search.gits import dp_path, gits_sigmas
from diffsampler.search.ld3 import (
    _SolveFn,
    grid_from_logits,
    logits_from_grid,
)
from diffsampler.search.run import SearchConfig, search_grid
from diffsampler.search.teacher import teacher_trajectory
from diffsampler.solvers import get_solver

GITS_CIFAR10_6 = [80, 10.9836, 3.8811, 1.584, 0.5666, 0.1698, 0.002]
"""The published GITS six-step grid of iPNDM on CIFAR-10 (zju-pi/diff-sampler, gits-main/README.md)."""
runner = CliRunner()


def _brute_force(cost: np.ndarray, steps: int, coeff: float) -> float:
    m = cost.shape[0] - 1
    best = math.inf
    for inner in itertools.combinations(range(1, m), steps - 1):
        path = [0, *inner, m]
        best = min(best, sum(coeff**k * cost[a, b] for k, (a, b) in enumerate(itertools.pairwise(path))))
    return best


@pytest.mark.parametrize("coeff", [1.0, 1.15, 0.7])
def test_dp_returns_the_exact_optimum(coeff):
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = int(rng.integers(2, 9))
        cost = rng.uniform(-1, 3, size=(m + 1, m + 1))
        for steps in range(1, m + 1):
            path = dp_path(cost, steps, coeff)
            assert path[0] == 0 and path[-1] == m and len(path) == steps + 1 and all(np.diff(path) > 0)
            value = sum(coeff**k * cost[a, b] for k, (a, b) in enumerate(itertools.pairwise(path)))
            assert value == pytest.approx(_brute_force(cost, steps, coeff), abs=1e-12)


def test_gits_on_a_single_gaussian_is_not_worse_than_polynomial_or_logsnr():
    """The ODE of N(mu, v I) is solved exactly (reference.gaussian_flow).

    Its trajectories are straight lines, so the paper's deviation cost is zero everywhere; GITS's l2 cost (Euler
    errors) is the one that applies, and Euler is the solver whose global error is the sum of those steps."""
    mean = torch.linspace(-1, 1, 16, dtype=torch.float64)[None]
    model = GaussianMixture(mean, variances=0.05**2)
    spec = get_solver("euler")
    x_eval = torch.randn(32, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80
    exact = gaussian_flow(mean[0], 0.05**2, x_eval, 80.0, 0.002)
    x_teacher = torch.randn(32, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 80
    traj = teacher_trajectory(model, x_teacher, get_sigmas("polynomial", 60, 0.002, 80.0), 64)
    errors = {}
    for name, grid in [
        ("gits", gits_sigmas(traj, 6, "l2")),
        *[(s, get_sigmas(s, 6, 0.002, 80.0)) for s in ("polynomial", "logsnr")],
    ]:
        errors[name] = float((spec.sample(model, x_eval, grid) - exact).pow(2).mean().sqrt())
    assert errors["gits"] <= min(errors["polynomial"], errors["logsnr"]), errors


def test_published_gits_grid_loads_as_a_schedule_file_and_samples(tmp_path):
    path = tmp_path / "gits-cifar10-6.json"
    path.write_text(json.dumps({"sigmas": GITS_CIFAR10_6}))
    spec = get_solver("ipndm")
    plan = plan_grid(spec, spec.resolve_options(), 0.002, 80.0, None, str(path))
    assert plan.sigmas.tolist() == GITS_CIFAR10_6 and plan.nfe == 6 and plan.schedule == "file:gits-cifar10-6"
    result = runner.invoke(
        app,
        [
            "sample",
            "--model",
            "gmm-2d",
            "--solver",
            "ipndm",
            "--schedule",
            str(path),
            "--num-samples",
            "8",
            "--out",
            str(tmp_path),
            "--name",
            "run",
        ],
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["sigmas"] == GITS_CIFAR10_6 and meta["nfe"] == 6 and meta["schedule"] == "file:gits-cifar10-6"
    assert np.isfinite(np.load(tmp_path / "run" / "samples.npz")["samples"]).all()


def test_schedule_file_round_trips(tmp_path):
    art = ScheduleArtefact(
        [80.0, 3.0, 0.5, 0.002], "gits", {"model": "gmm-2d", "nfe": 3, "solver": "ipndm"}, {"seed": 1}, 1.5
    )
    back = read_schedule(write_schedule(tmp_path / "s.json", art))
    assert back == art


@pytest.mark.parametrize(
    "text, words",
    [
        ("{not json", "not valid JSON"),
        ('{"grid": [1, 0.1]}', "'sigmas' list"),
        ('{"sigmas": [0.1, 1.0]}', "strictly descending"),
        ('{"sigmas": [80, "a", 1]}', "list of numbers"),
        ('{"sigmas": [80, NaN, 1]}', "NaN"),
        ('{"sigmas": [80]}', "at least 2"),
    ],
)
def test_malformed_or_non_monotone_schedule_file_is_refused_in_one_line(tmp_path, text, words):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(UserError, match=words) as info:
        read_schedule(path)
    assert "\n" not in str(info.value)
    result = runner.invoke(app, ["sample", "--model", "gmm-2d", "--schedule", str(path), "--out", str(tmp_path)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1


def test_schedule_file_for_another_model_is_used_unaltered_and_an_explicit_other_nfe_refused(tmp_path, caplog):
    path = write_schedule(
        tmp_path / "s.json",
        ScheduleArtefact(GITS_CIFAR10_6, "gits", {"model": "x", "model_sha256": "ab" * 32, "nfe": 6}),
    )
    spec = get_solver("dpmpp")
    with caplog.at_level(logging.WARNING):
        plan = plan_grid(spec, spec.resolve_options(), 0.002, 80.0, None, str(path))
        result = runner.invoke(
            app, ["sample", "--model", "gmm-2d", "--schedule", str(path), "--num-samples", "4", "--out", str(tmp_path)]
        )
    assert plan.sigmas.tolist() == GITS_CIFAR10_6 and plan.nfe == 6
    assert result.exit_code == 0 and any("made for model x" in r.getMessage() for r in caplog.records)
    with pytest.raises(UserError, match="costs dpmpp 6 NFE, not the 5 asked for; leave --nfe out or give --nfe 6"):
        plan_grid(spec, spec.resolve_options(), 0.002, 80.0, 5, str(path))


def test_ays_reproduces_the_published_grids_and_interpolates_log_linearly():
    for name, table in AYS_SIGMAS.items():
        assert get_sigmas(f"ays_{name}", 10, 0.029, 14.615).tolist() == pytest.approx(table, rel=1e-12)
        assert get_sigmas(f"ays_{name}", 5, 0.029, 14.615).tolist() == pytest.approx(table[::2], rel=1e-12)
        fine = get_sigmas(f"ays_{name}", 20, 0.029, 14.615)
        assert fine[1::2].tolist() == pytest.approx([math.sqrt(a * b) for a, b in itertools.pairwise(table)], rel=1e-12)


def test_ld3_grid_gradient_by_finite_differences_matches_autograd():
    """iPNDM takes tensor sigmas, so autograd through it is the exact gradient the finite differences must match."""
    model, spec = load_model("gmm-2d"), get_solver("ipndm")
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80
    target = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    init = get_sigmas("polynomial", 5, 0.002, 80.0)
    grads = []
    for fd in (True, False):
        theta = logits_from_grid(init).clone().requires_grad_(True)
        log_sig = grid_from_logits(theta, 0.002, 80.0)
        if fd:
            out = _SolveFn.apply(x, log_sig, lambda xs, g: spec.sample_fn(model, xs, g, order=4))
        else:
            out = spec.sample_fn(model, x, list(log_sig.exp().unbind()), order=4)
        (out - target).pow(2).sum().backward()
        grads.append(theta.grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-6, atol=1e-8), grads


def test_ld3_lowers_its_loss_and_keeps_the_grid_ordered_in_range():
    model = load_model("gmm-2d")
    cfg = SearchConfig(model="gmm-2d", method="ld3", solver="ipndm", nfe=4, num_samples=32, iterations=15, lr=0.02)
    art = search_grid(cfg, model)
    assert art.search["final_loss"] < art.search["initial_loss"]
    grid = torch.tensor(art.sigmas)
    assert (grid[1:] < grid[:-1]).all() and len(art.sigmas) == 5
    assert art.sigmas[0] == pytest.approx(80.0, rel=1e-12) and art.sigmas[-1] == pytest.approx(0.002, rel=1e-12)
    assert art.made_for["solver"] == "ipndm" and art.made_for["nfe"] == 4 and art.method == "ld3"


def test_benchmark_searches_learned_schedules_once_and_records_them(tmp_path):
    gits_file = write_schedule(tmp_path / "g6.json", ScheduleArtefact(GITS_CIFAR10_6))
    config = tmp_path / "bench.yaml"
    config.write_text(
        "model: gmm-2d\nnum_samples: 8\nnfe: [3, 6]\nmetrics: [rmse]\nsolvers:\n"
        "  - {solver: ipndm, schedule: gits, search: {num_samples: 16, metric: l2}}\n"
        f"  - {{solver: dpmpp, schedule: {gits_file}, label: dpmpp-file}}\n"
    )
    args = ["benchmark", "-c", str(config), "--out", str(tmp_path), "--name", "run"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    cache = sorted((tmp_path / ".cache" / "schedules").glob("*.json"))
    assert [p.name.split("-")[:3] for p in cache] == [["ipndm", "gits", "nfe3"], ["ipndm", "gits", "nfe6"]]
    rows = {(r["solver"], r["nfe"]): r for r in csv.DictReader((tmp_path / "run" / "sigmas.csv").open())}
    for nfe, path in zip((3, 6), cache):
        assert rows[("ipndm @gits", str(nfe))]["schedule"] == "gits"
        assert [float(s) for s in rows[("ipndm @gits", str(nfe))]["sigmas"].split()] == read_schedule(path).sigmas
    assert [float(s) for s in rows[("dpmpp-file", "6")]["sigmas"].split()] == GITS_CIFAR10_6
    assert ("dpmpp-file", "3") not in rows
    stamps = [p.stat().st_mtime_ns for p in cache]
    assert runner.invoke(app, args).exit_code == 0
    assert [p.stat().st_mtime_ns for p in cache] == stamps


def test_search_schedule_command_writes_a_file_that_sample_uses(tmp_path):
    path = tmp_path / "g.json"
    result = runner.invoke(
        app,
        [
            "search-schedule",
            "--method",
            "gits",
            "--model",
            "gmm-2d",
            "--solver",
            "dpmpp",
            "--nfe",
            "4",
            "--num-samples",
            "16",
            "--out",
            str(path),
        ],
    )
    assert result.exit_code == 0, result.output
    art = read_schedule(path)
    assert art.method == "gits" and art.steps == 4 and art.made_for["solver"] == "dpmpp" and art.made_for["nfe"] == 4
    assert art.made_for["model_sha256"] == load_model("gmm-2d").content_hash() and art.search["teacher_steps"] == 40
    assert set(art.sigmas) <= set(get_sigmas("polynomial", 40, 0.002, 80.0).tolist())
    result = runner.invoke(
        app,
        [
            "sample",
            "--model",
            "gmm-2d",
            "--solver",
            "unipc",
            "--schedule",
            str(path),
            "--num-samples",
            "4",
            "--out",
            str(tmp_path),
            "--name",
            "run",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "meta.json").read_text())["sigmas"] == art.sigmas
    bad = runner.invoke(app, ["search-schedule", "--method", "gist", "--model", "gmm-2d"])
    assert bad.exit_code == 2 and "did you mean 'gits'" in bad.output


def test_benchmark_schedule_path_with_nfe_placeholder_reads_one_file_per_budget(tmp_path):
    # {nfe} in a schedule path names one file per budget (e.g. a GITS grid searched for one solver, reused by
    # another): each column runs on its own file's exact grid, and a budget without a file is n/a.
    grids = {3: [80.0, 2.0, 0.3, 0.002], 5: [80.0, 10.0, 2.0, 0.5, 0.1, 0.002]}
    for nfe, sigmas in grids.items():
        (tmp_path / f"grid-nfe{nfe}.json").write_text(json.dumps({"sigmas": sigmas}))
    config = tmp_path / "bench.yaml"
    config.write_text(
        "model: gmm-2d\nnfe: [3, 4, 5]\nnum_samples: 8\nmetrics: [rmse]\n"
        f"solvers:\n  - {{solver: euler, label: euler file, schedule: '{tmp_path}/grid-nfe{{nfe}}.json'}}\n"
    )
    result = runner.invoke(app, ["benchmark", "--config", str(config), "--out", str(tmp_path), "--name", "run"])
    assert result.exit_code == 0, result.output
    rows = {int(r["nfe"]): r for r in csv.DictReader((tmp_path / "run" / "sigmas.csv").open())}
    assert sorted(rows) == [3, 5]
    for nfe, sigmas in grids.items():
        assert [float(s) for s in rows[nfe]["sigmas"].split()] == sigmas
    table = next(r for r in csv.DictReader((tmp_path / "run" / "table.csv").open()) if r["metric"] == "rmse")
    assert table["nfe_4"] == "n/a" and float(table["nfe_3"]) > float(table["nfe_5"]) > 0
