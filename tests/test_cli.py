"""The command line, through typer's runner and as a real subprocess of the installed script."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from diffsampler.cli import app
from diffsampler.models import MODELS, GaussianMixture, register_model

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_sample_writes_npz_meta_and_grid(tmp_path):
    result = runner.invoke(
        app, ["sample", "--num-samples", "8", "--nfe", "6", "--solver", "heun", "--out", str(tmp_path), "--name", "run"]
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "run"
    data = np.load(folder / "samples.npz")
    assert data["samples"].shape == (8, 1, 32, 32)
    assert data["sigmas"].shape == (4,)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["nfe"] == 6 and meta["solver"] == "heun" and meta["schedule"] == "polynomial"
    assert (folder / "grid.png").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_sample_config_file_with_overrides(tmp_path):
    result = runner.invoke(
        app,
        [
            "sample",
            "-c",
            str(ROOT / "configs/sample/toy2d-heun-afs.yaml"),
            "--num-samples",
            "16",
            "--out",
            str(tmp_path),
            "-o",
            "afs=true",
        ],
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "gmm-2d-heun-nfe7" / "meta.json").read_text())
    assert meta["nfe"] == 7 and meta["steps"] == 4 and meta["options"]["afs"] is True
    assert (tmp_path / "gmm-2d-heun-nfe7" / "scatter.png").exists()


def test_sample_is_reproducible_and_batch_independent(tmp_path):
    args = [
        "sample",
        "--model",
        "gmm-2d",
        "--solver",
        "euler",
        "--nfe",
        "5",
        "--num-samples",
        "10",
        "--out",
        str(tmp_path),
    ]
    assert runner.invoke(app, [*args, "--name", "a", "--batch-size", "3"]).exit_code == 0
    assert runner.invoke(app, [*args, "--name", "b", "--batch-size", "10"]).exit_code == 0
    a = np.load(tmp_path / "a" / "samples.npz")["samples"]
    b = np.load(tmp_path / "b" / "samples.npz")["samples"]
    assert np.array_equal(a, b)


def test_explicit_sigma_grid(tmp_path):
    result = runner.invoke(
        app,
        [
            "sample",
            "--model",
            "gmm-2d",
            "--solver",
            "euler",
            "--set",
            "sigmas=[80, 5, 1, 0.1]",
            "--out",
            str(tmp_path),
            "--name",
            "g",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "g" / "meta.json").read_text())["sigmas"] == [80.0, 5.0, 1.0, 0.1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "nope"], "unknown model 'nope'"),
        (["--solver", "huen"], "did you mean 'heun'"),
        (["--nfe", "0"], "nfe must be at least 1"),
        (["--config", "missing.yaml"], "config file not found: missing.yaml"),
        (["--solver", "heun", "--nfe", "5"], "heun uses 2 NFE per step"),
        (["-o", "asf=true"], "did you mean 'afs'"),
        (["--set", "sigmas=[1, 2, 3]"], "strictly descending"),
        (["--set", "sigmas=1"], "'sigmas' must be a list"),
        (["--set", "nfe=five"], "'nfe' must be an integer"),
        (["--set", "solvr=heun"], "unknown key in --set 'solvr' (did you mean 'solver'?)"),
        (["--schedule", "cosine"], "unknown schedule 'cosine'"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, args, message):
    result = runner.invoke(app, ["sample", "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unknown_yaml_key_via_cli(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("modle: gmm-2d\n")
    result = runner.invoke(app, ["sample", "--config", str(cfg), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "unknown key" in result.output and "did you mean 'model'" in result.output


def test_nan_from_model_is_a_clear_error_and_leaves_nothing(tmp_path):
    class NaNModel(GaussianMixture):
        def denoise(self, x, sigma, cond=None):
            return torch.full_like(x, float("nan"))

    register_model("nan-test", lambda: NaNModel(torch.zeros(1, 2, dtype=torch.float64), 1.0), "test only")
    try:
        result = runner.invoke(app, ["sample", "--model", "nan-test", "--out", str(tmp_path / "out")])
    finally:
        MODELS.pop("nan-test")
    assert result.exit_code == 2
    assert "NaN" in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_list_names_every_registered_thing():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0
    for name in ("gmm-fmnist", "gmm-2d", "euler", "heun", "dpm2", "polynomial", "logsnr", "time_uniform"):
        assert name in result.output


def _console_script() -> str:
    script = Path(sys.executable).parent / "diffsampler"
    found = str(script) if script.exists() else shutil.which("diffsampler")
    assert found, "the diffsampler console script is not installed"
    return found


def test_installed_console_script_runs_and_fails_cleanly(tmp_path):
    script = _console_script()
    ok = subprocess.run(
        [script, "sample", "--num-samples", "4", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0, ok.stderr
    assert "NFE 10" in ok.stdout
    bad = subprocess.run([script, "sample", "--model", "nope"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "unknown model" in bad.stderr
    assert "Traceback" not in bad.stderr
    debug = subprocess.run(
        [script, "--debug", "sample", "--model", "nope"], capture_output=True, text=True, timeout=120
    )
    assert "Traceback" in debug.stderr


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "diffsampler", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "sample" in out.stdout


def _help_defaults(command: str) -> dict[str, str]:
    """option name -> the X of 'Default X.' in the help text of its flag, from the help as drawn."""
    import re

    text = runner.invoke(app, [command, "--help"], env={"COLUMNS": "1000"}).output
    return {
        m.group(1).replace("-", "_"): m.group(2)
        for m in re.finditer(r"--([a-z-]+)\b[^\n]*? Default ([^:<][^ ]*?)\.(?: |$)", text, flags=re.M)
    }


CONFIG_COMMANDS = [
    ("sample", "diffsampler.config:SampleConfig"),
    ("benchmark", "diffsampler.bench.config:BenchmarkConfig"),
    ("train-amed", "diffsampler.amed.config:AmedTrainConfig"),
    ("train-model", "diffsampler.train:TrainConfig"),
    ("compute-ems", "diffsampler.ems.config:EmsConfig"),
    ("search-schedule", "diffsampler.search.run:SearchConfig"),
]


def _config_class(target: str):
    import importlib

    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("command, config", CONFIG_COMMANDS)
def test_help_defaults_are_the_config_defaults(command, config):
    """The CLI's flags default to None (a config file's value wins); the defaults their help states must be the
    dataclass's, which is where they are declared, and the help lists every key of the config."""
    from diffsampler.config import flat_dict

    defaults = flat_dict(_config_class(config)())
    stated = _help_defaults(command)
    assert len(stated) >= 4, stated  # the parse finds them
    for option, text in stated.items():
        value = defaults[option]
        if value is None and (command, option) == ("sample", "nfe"):
            from diffsampler.sampling import DEFAULT_NFE

            value = DEFAULT_NFE  # None in the config means the sampler's default budget
        if isinstance(value, bool):
            assert text == ("on" if value else "off"), option
        elif isinstance(value, float):
            assert float(text) == value, option
        elif isinstance(value, list):
            assert text == ",".join(map(str, value)), option
        else:
            assert text == str(value), option
    listed = runner.invoke(app, [command, "--help"], env={"COLUMNS": "1000"}).output
    assert all(f" {key}=" in listed for key in defaults), listed


@pytest.mark.parametrize("command, config", CONFIG_COMMANDS)
def test_every_flag_of_a_config_command_is_a_config_key(command, config):
    """One form: --config, --set and flags that each stand for one config key (plus a few actions)."""
    import typer.main

    from diffsampler.config import config_keys

    keys = set(config_keys(_config_class(config)))
    actions = {"config", "sets", "option", "model_option", "fresh", "resume", "report_only"}
    params = typer.main.get_command(app).commands[command].params
    assert {p.name for p in params} - actions <= keys


@pytest.mark.parametrize(
    "command",
    [
        "sample",
        "train-amed",
        "train-model",
        "benchmark",
        "compute-ems",
        "search-schedule",
        "ref-stats",
        "fid",
        "throughput",
    ],
)
def test_help_shows_defaults_one_way_and_no_bool_metavar_on_flags(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    assert "[default:" not in result.output
    flags = [line for line in result.output.splitlines() if "<bool>" in line]
    assert all("--help" in line for line in flags), flags  # typer's own --help row keeps its type column
