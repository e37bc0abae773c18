"""The benchmark's code hash covers everything a cell depends on; an edit invalidates the affected cells only
(issue 21)."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diffsampler import codehash
from diffsampler.artefacts import prepare_hook
from diffsampler.bench.metric_registry import METRICS
from diffsampler.cli import app
from diffsampler.solvers import SOLVERS

runner = CliRunner()
ALL = set(SOLVERS)


@pytest.fixture()
def package_copy(tmp_path):
    """A copy of the package's sources, to edit without touching the real files."""
    copy = tmp_path / "src" / "diffsampler"
    shutil.copytree(codehash.PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__", "*.npz"))
    return copy


def hashes(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    solvers = {name: codehash.solver_code(s.sample_fn, prepare_hook(name), root) for name, s in SOLVERS.items()}
    metrics = {
        name: codehash.metric_code(m.compute, m.prepare, m.unavailable, root=root) for name, m in METRICS.items()
    }
    return solvers, metrics


def edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# edited\n")


# What each shared file is used by, read off the imports of the solver modules (see `diffsampler list`).
@pytest.mark.parametrize(
    "file, solvers, metrics_change",
    [
        ("solvers/adams_bashforth.py", {"deis", "ipndm", "ipndm_v", "ipndm_v_published", "amed", "amed-plugin"}, False),
        ("solvers/dpm_solver_pp.py", {"dpmpp", "dpmpp_published", "amed", "amed-plugin"}, False),
        ("solvers/runge_kutta.py", {"euler", "heun", "dpm2"}, False),
        ("ems/format.py", {"dpm-solver-v3"}, False),
        ("amed/checkpoint.py", {"amed", "amed-plugin"}, False),
        ("artefacts.py", ALL, False),
        ("solvers/base.py", ALL, False),
        ("schedules.py", ALL, True),
        ("sampling.py", ALL, False),
        ("sample_run.py", set(), False),  # the `sample` command: no cell's samples depend on it
        ("run_setup.py", set(), False),
        ("models/gaussian_mixture.py", ALL, False),
        ("metrics/reference.py", set(), True),
        ("metrics/pixel_frechet.py", set(), True),
    ],
)
def test_an_edit_changes_the_hash_of_the_cells_that_use_it_and_no_others(package_copy, file, solvers, metrics_change):
    before_solvers, before_metrics = hashes(package_copy)
    assert len(set(before_solvers.values())) > 3, "solvers built on different modules must hash differently"
    edit(package_copy / file)
    after_solvers, after_metrics = hashes(package_copy)
    assert {n for n in ALL if after_solvers[n] != before_solvers[n]} == solvers
    assert (after_metrics != before_metrics) == metrics_change
    if metrics_change:
        assert all(after_metrics[n] != before_metrics[n] for n in METRICS)


def test_the_closure_holds_the_shared_helpers():
    files = {
        str(p.relative_to(codehash.PACKAGE_ROOT))
        for p in codehash.closure([SOLVERS["amed-plugin"].sample_fn.__module__])
    }
    assert {"solvers/base.py", "solvers/dpm_solver_pp.py", "solvers/ipndm.py", "solvers/adams_bashforth.py"} <= files
    assert "solvers/runge_kutta.py" not in files


def test_resume_recomputes_only_the_cells_whose_code_changed(tmp_path, package_copy, monkeypatch):
    monkeypatch.setattr(codehash, "PACKAGE_ROOT", package_copy)
    args = [
        "benchmark",
        "--model",
        "gmm-2d",
        "--solvers",
        "euler,ipndm",
        "--nfe",
        "2,3",
        "--num-samples",
        "16",
        "--metrics",
        "pixel_fd,rmse",
        "--out",
        str(tmp_path),
        "--name",
        "run",
    ]
    assert runner.invoke(app, args).exit_code == 0
    records = tmp_path / "run" / "records"
    before = {str(p.relative_to(records)): p.read_bytes() for p in records.rglob("*.json")}
    edit(package_copy / "solvers" / "adams_bashforth.py")
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "2 cells sampled, 2 reused" in again.output
    after = {str(p.relative_to(records)): p.read_bytes() for p in records.rglob("*.json")}
    assert after.keys() == before.keys()
    changed = {k.split("/")[0] for k in after if after[k] != before[k]}
    assert len(changed) == 1 and changed.pop().startswith("ipndm")
    assert {k for k in after if k.startswith("euler")} and all(
        after[k] == before[k] for k in after if k.startswith("euler")
    )
    edit(package_copy / "metrics" / "pixel_frechet.py")
    third = runner.invoke(app, args)
    assert third.exit_code == 0 and "4 cells sampled, 0 reused" in third.output
    final = {str(p.relative_to(records)): p.read_bytes() for p in records.rglob("*.json")}
    # All metrics live in bench/metric_registry.py, which imports pixel_frechet: both are recomputed, the samples
    # reused.
    assert final.keys() == after.keys() and all(final[k] != after[k] for k in final)
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert manifest["metrics"]["pixel_fd"]["code"] == codehash.metric_code(
        *(getattr(METRICS["pixel_fd"], a) for a in ("compute", "prepare", "unavailable"))
    )


def _two_label_run(tmp_path, first_label: str, nfe: int) -> tuple[list[str], dict[str, Path], dict[str, bytes]]:
    """An rmse benchmark of ``first_label`` (a YAML solver mapping) beside plain Euler: its command, its record
    files by label folder, and their bytes after the first run."""
    config = tmp_path / "bench.yaml"
    config.write_text(
        f"model: gmm-2d\nnum_samples: 8\nnfe: [{nfe}]\nmetrics: [rmse]\nsolvers:\n"
        f"  - {first_label}\n  - {{solver: euler}}\n"
    )
    args = ["benchmark", "-c", str(config), "--out", str(tmp_path), "--name", "run"]
    assert runner.invoke(app, args).exit_code == 0
    records = {p.parent.parent.parent.name: p for p in (tmp_path / "run" / "records").rglob("rmse.json")}
    return args, records, {label: path.read_bytes() for label, path in records.items()}


def test_resume_recomputes_the_cells_of_a_schedule_file_edited_in_place(tmp_path):
    from diffsampler.schedule_file import ScheduleArtefact, write_schedule

    grid = tmp_path / "grid.json"
    write_schedule(grid, ScheduleArtefact([80.0, 10.0, 1.0, 0.1, 0.002]))
    args, records, before = _two_label_run(tmp_path, f"{{solver: euler, schedule: {grid}, label: file}}", 4)
    write_schedule(grid, ScheduleArtefact([80.0, 20.0, 2.0, 0.2, 0.002]))
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "1 cells sampled, 1 reused" in again.output
    changed = {label for label, path in records.items() if path.read_bytes() != before[label]}
    assert len(changed) == 1 and changed.pop().startswith("file")
    assert json.loads(records[next(k for k in records if k.startswith("file"))].read_text())["sigmas"][1] == 20.0


def _train_toy_amed(folder: Path, name: str, nfe: int = 3, seed: int = 0) -> None:
    args = ["train-amed", "-c", "configs/amed/toy2d-amed-nfe3.yaml", "--set", "num_latents=64", "--seed", str(seed)]
    result = runner.invoke(app, [*args, "--out", str(folder), "--set", f"name={name}", "--set", f"nfe={nfe}"])
    assert result.exit_code == 0, result.output


def test_resume_recomputes_the_cells_of_a_predictor_file_replaced_in_place(tmp_path, caplog):
    # Each record holds the hash of the artefact files its cell names (spec.requires): a retrained
    # predictor at the same path must not be met with the old predictor's numbers.
    _train_toy_amed(tmp_path, "p", seed=0)
    amed = f"{{solver: amed, label: amed, options: {{predictor: {tmp_path / 'p.pt'}}}}}"
    args, records, before = _two_label_run(tmp_path, amed, 3)
    unchanged = runner.invoke(app, args)
    assert "0 cells sampled, 2 reused" in unchanged.output, unchanged.output
    _train_toy_amed(tmp_path, "p", seed=1)
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "1 cells sampled, 1 reused" in again.output
    assert any("with other artefact files" in r.getMessage() for r in caplog.records)
    changed = {label for label, path in records.items() if path.read_bytes() != before[label]}
    assert len(changed) == 1 and changed.pop().startswith("amed")


def test_resume_with_more_budgets_keeps_the_cells_of_unchanged_predictors(tmp_path):
    # A predictor path templated by {nfe} names one file per budget: adding a budget to the run adds a file,
    # which must not discard the records of the budgets already there (their files did not change).
    _train_toy_amed(tmp_path, "p-nfe3")
    _train_toy_amed(tmp_path, "p-nfe5", nfe=5)
    amed = f"{{solver: amed, label: amed, options: {{predictor: '{tmp_path}/p-nfe{{nfe}}.pt'}}}}"
    args, records, before = _two_label_run(tmp_path, amed, 3)
    config = tmp_path / "bench.yaml"
    config.write_text(config.read_text().replace("nfe: [3]", "nfe: [3, 5]"))
    more = runner.invoke(app, args)
    assert more.exit_code == 0, more.output
    assert "2 cells sampled, 2 reused" in more.output, more.output
    assert all(path.read_bytes() == before[label] for label, path in records.items())
