"""Plugins by entry points: the example package installed for real (pip --target, a subprocess with that path),
listed with its package and benchmarked; a broken package is one warning line and everything else still works."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from diffsampler import plugins
from diffsampler.artefacts import PREPARE_HOOKS, prepare_hook
from diffsampler.solvers import SOLVERS, get_solver

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "diffsampler-plugin-example"
PACKAGE = "diffsampler-plugin-example"


def pip_install(source: Path, target: Path) -> Path:
    """``pip install --no-deps --target`` of a copy of a package folder (so that pip's build folder is not left in
    the repository; the venv's setuptools builds it, no index needed)."""
    copy = target.parent / f"{source.name}-src"
    shutil.copytree(source, copy)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target"]
    subprocess.run([*cmd, str(target), str(copy)], check=True, capture_output=True, timeout=300)
    return target


def diffsampler(args: list[str], cwd: Path, path: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh interpreter, with ``path`` (an install target) on PYTHONPATH when given."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if path is not None:
        env["PYTHONPATH"] = str(path)
    env["COLUMNS"] = "200"
    cmd = [sys.executable, "-m", "diffsampler", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    return pip_install(EXAMPLE, tmp_path_factory.mktemp("plugin") / "site")


def benchmark_args(solvers: str, name: str) -> list[str]:
    return [
        "benchmark",
        "--model",
        "gmm-2d",
        "--solvers",
        solvers,
        "--nfe",
        "4",
        "--metrics",
        "rmse",
        "--num-samples",
        "8",
        "--device",
        "cpu",
        "--out",
        "out",
        "--name",
        name,
    ]


def test_installed_example_is_listed_with_its_package_and_benchmarks(installed, tmp_path):
    listed = diffsampler(["list"], tmp_path, installed)
    assert listed.returncode == 0, listed.stderr
    (line,) = [row for row in listed.stdout.splitlines() if row.split()[:1] == ["dpmpp-2s"]]
    assert f"(plugin: {PACKAGE})" in line and listed.stderr == ""
    run = diffsampler(benchmark_args("dpmpp-2s,euler", "p"), tmp_path, installed)
    assert run.returncode == 0, run.stderr
    cells = json.loads((tmp_path / "out" / "p" / "results.json").read_text())["cells"]
    assert {(c["solver"], c["nfe"]) for c in cells} == {("dpmpp-2s", 4), ("euler", 4)}
    assert all(c["values"]["rmse"] > 0 for c in cells)


def test_without_the_example_nothing_mentions_it(tmp_path):
    listed = diffsampler(["list"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "dpmpp-2s" not in listed.stdout + listed.stderr and PACKAGE not in listed.stdout
    run = diffsampler(["sample", "--model", "gmm-2d", "--solver", "dpmpp-2s", "--out", "out"], tmp_path)
    assert run.returncode == 2 and "unknown solver 'dpmpp-2s'" in run.stderr


BROKEN_TOML = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "broken-plugin"
version = "0.0.1"

[project.entry-points."diffsampler.solvers"]
raises = "broken_plugin.raises:register"
not-callable = "broken_plugin:NOT_A_FUNCTION"
"""


def test_a_broken_plugin_is_one_warning_line_each_and_the_rest_works(tmp_path):
    source = tmp_path / "broken"
    (source / "broken_plugin").mkdir(parents=True)
    (source / "pyproject.toml").write_text(BROKEN_TOML)
    (source / "broken_plugin" / "__init__.py").write_text("NOT_A_FUNCTION = 3\n")
    (source / "broken_plugin" / "raises.py").write_text("raise RuntimeError('cannot import\\nthis plugin')\n")
    site = pip_install(source, tmp_path / "site")
    listed = diffsampler(["list"], tmp_path, site)
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.splitlines() == [
        "warning: plugin 'not-callable' of package broken-plugin (diffsampler.solvers) skipped: TypeError: "
        "broken_plugin:NOT_A_FUNCTION is a int, not a register function",
        "warning: plugin 'raises' of package broken-plugin (diffsampler.solvers) skipped: RuntimeError: "
        "cannot import this plugin",
    ]
    assert "euler" in listed.stdout
    run = diffsampler(benchmark_args("euler", "b"), tmp_path, site)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "b" / "results.json").is_file()


def test_the_builtin_artefact_loaders_enter_as_plugins():
    """AMED's and DPM-Solver-v3's hooks come from diffsampler.plugins.BUILTIN (artefacts.py imports neither)."""
    get_solver("euler")
    assert {"amed", "amed-plugin", "dpm-solver-v3"} <= set(PREPARE_HOOKS)
    assert prepare_hook("amed").__module__ == "diffsampler.amed.checkpoint"
    assert prepare_hook("dpm-solver-v3").__module__ == "diffsampler.ems.format"
    assert prepare_hook("euler") is None


def test_a_failing_register_function_is_rolled_back(monkeypatch):
    """What a plugin registered before it raised is removed again; the warning names it."""

    def half_done() -> None:
        SOLVERS["half"] = SOLVERS["euler"]
        raise ValueError("second half failed")

    ep = plugins.EntryPoint("half", "x:y", "diffsampler.solvers")
    monkeypatch.setattr(plugins.EntryPoint, "load", lambda self: half_done)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert plugins._load_one(ep, "half-pkg", "diffsampler.solvers", SOLVERS) == []
    assert "half" not in SOLVERS
    (warning,) = caught
    assert str(warning.message) == (
        "plugin 'half' of package half-pkg (diffsampler.solvers) skipped: ValueError: second half failed"
    )


def test_a_plugin_may_not_replace_a_builtin(monkeypatch):
    def replace_euler() -> None:
        SOLVERS["euler"] = SOLVERS["heun"]

    original = SOLVERS["euler"]
    monkeypatch.setattr(plugins.EntryPoint, "load", lambda self: replace_euler)
    with pytest.warns(plugins.PluginWarning, match="registers 'euler', which exists already"):
        plugins._load_one(plugins.EntryPoint("e", "x:y", "g"), "pkg", "diffsampler.solvers", SOLVERS)
    assert SOLVERS["euler"] is original


def test_example_solver_equals_k_diffusion_dpmpp_2s_at_eta_0():
    """The example's step is k-diffusion's sample_dpmpp_2s_ancestral with eta = 0 (no noise); float64, so the
    tolerance 1e-10 only absorbs the order of operations."""
    from test_peer_oracles import _k_sampling

    from diffsampler.models import GaussianMixture
    from diffsampler.schedules import get_sigmas

    sys.path.insert(0, str(EXAMPLE / "src"))
    try:
        import diffsampler_dpmpp2s as example
    finally:
        sys.path.remove(str(EXAMPLE / "src"))
    model = GaussianMixture(torch.tensor([[1.0, -1.0], [-2.0, 0.5]], dtype=torch.float64), variances=[0.1, 0.3])
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80
    sigmas = torch.cat([get_sigmas("logsnr", 6, 0.002, 80.0), torch.zeros(1, dtype=torch.float64)])
    theirs = _k_sampling().sample_dpmpp_2s_ancestral(
        model, x.clone(), sigmas, eta=0.0, disable=True, noise_sampler=lambda s, t: torch.zeros_like(x)
    )
    model.reset_calls()
    ours = example.dpmpp_2s(model, x.clone(), sigmas.tolist())
    assert model.calls == 2 * 6 + 1
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def test_a_plugin_solvers_source_file_enters_the_code_hash(tmp_path, monkeypatch):
    """Editing a plugin's solver file changes the hash its benchmark cells are stored under (so they recompute)."""
    import importlib

    from diffsampler import codehash

    source = tmp_path / "hashed_plugin.py"
    source.write_text("def solve(denoiser, x, sigmas, *, cond=None, afs=False, denoise_to_zero=False):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("hashed_plugin")
    before = codehash.solver_code(module.solve)
    assert before != codehash.solver_code(SOLVERS["euler"].sample_fn)
    source.write_text(source.read_text() + "# edited\n")
    assert codehash.solver_code(module.solve) != before
    assert codehash.foreign_file(SOLVERS["euler"].sample_fn) is None
