"""Solver options come from the solver function's signature (defaults written once) and are checked when a
config or command line is read: a bad value is one line and exit code 2, before anything runs."""

import inspect
from typing import Annotated, Any, Literal

import pytest
import yaml
from typer.testing import CliRunner

from diffsampler.cli import app
from diffsampler.errors import UserError
from diffsampler.solvers import SOLVERS, get_solver
from diffsampler.solvers.base import SolverSpec
from diffsampler.solvers.options import Range, accepts, signature_options

runner = CliRunner()


def _defaults(fn):
    target = inspect.unwrap(fn)
    return {
        p.name: p.default
        for p in inspect.signature(target).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in ("cond", "callback") and not p.name.startswith("_")
    }


@pytest.mark.parametrize("name", list(SOLVERS))
def test_every_registered_solver_takes_its_options_from_its_signature(name):
    spec = get_solver(name)
    assert spec.options == _defaults(spec.sample_fn)
    assert {"afs", "denoise_to_zero"} <= set(spec.options)
    assert spec.resolve_options() == spec.options


def test_published_variant_shares_dpmpp_options_but_not_its_private_flag():
    assert get_solver("dpmpp_published").options == get_solver("dpmpp").options
    assert "_published_3m" not in get_solver("dpmpp").options
    with pytest.raises(UserError, match="unknown option of solver 'dpmpp'"):
        get_solver("dpmpp").resolve_options({"_published_3m": True})


def test_a_new_solver_declares_options_in_its_signature_only():
    def toy(
        denoiser,
        x,
        sigmas,
        *,
        cond: Any = None,
        afs: bool = False,
        denoise_to_zero: bool = False,
        gain: Annotated[float, Range(0, 2, low_open=True)] = 1.0,
        mode: Literal["a", "b"] = "a",
    ):
        return x

    spec = SolverSpec("toy", toy, 1, "polynomial", "a toy")
    assert spec.options == {"afs": False, "denoise_to_zero": False, "gain": 1.0, "mode": "a"}
    assert spec.resolve_options({"gain": 2})["gain"] == 2.0 and isinstance(
        spec.resolve_options({"gain": 2})["gain"], float
    )
    for bad in ({"gain": 0}, {"gain": "x"}, {"mode": "c"}, {"afs": "true"}):
        with pytest.raises(UserError, match="toy option"):
            spec.resolve_options(bad)


def test_a_solver_without_the_common_options_is_refused_at_registration():
    def bare(denoiser, x, sigmas, *, cond=None, order: int = 2):
        return x

    with pytest.raises(TypeError, match="afs, denoise_to_zero"):
        signature_options(bare)


@pytest.mark.parametrize(
    "tp, value, ok",
    [
        (bool, True, True),
        (bool, "false", False),
        (bool, 1, False),
        (int, 3, True),
        (int, True, False),
        (int, 3.0, False),
        (float, 1, True),
        (float, float("nan"), False),
        (float, float("inf"), False),
        (float, "0.5", False),
        (Literal[1, 2, 3], 2, True),
        (Literal[1, 2, 3], True, False),
        (Literal[1, 2, 3], 7, False),
        (Literal["a"] | None, None, True),
        (int | None, "x", False),
        (Any, object(), True),
    ],
)
def test_accepts(tp, value, ok):
    assert accepts(tp, value)[0] is ok


def test_range_ends():
    half_open = Range(0, 1, low_open=True)
    assert 1 in half_open and 0 not in half_open and 1e-9 in half_open and str(half_open) == "(0, 1]"


# The reproductions of issue 21: on main each was a traceback (r), a misleading NFE error (afs, denoise_to_zero),
# a silent misuse (dpmpp thresholding=perhaps ran thresholded, order=true ran order 1) or a failed cell (order 7).
@pytest.mark.parametrize(
    "option, message",
    [
        ("r=abc", "dpm2 option r must be a number in (0, 1], got 'abc'"),
        ("r=nan", "dpm2 option r must be a number in (0, 1], got 'nan'"),
        ("r=.nan", "dpm2 option r must be a number in (0, 1], got nan"),
        ("afs=maybe", "dpm2 option afs must be true or false or one of mean or a Tensor, got 'maybe'"),
        ('afs="false"', "dpm2 option afs must be true or false or one of mean or a Tensor, got 'false'"),
        ("denoise_to_zero=2", "dpm2 option denoise_to_zero must be true or false, got 2"),
    ],
)
def test_sample_refuses_a_bad_dpm2_option(tmp_path, option, message):
    result = runner.invoke(app, ["sample", "--solver", "dpm2", "--nfe", "6", "-o", option, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "option, message",
    [
        ("thresholding=perhaps", "dpmpp option thresholding must be true or false, got 'perhaps'"),
        ("order=true", "dpmpp option order must be one of 1, 2, 3, got True"),
        ("order=7", "dpmpp option order must be one of 1, 2, 3, got 7"),
        ("variant=heun", "dpmpp option variant must be one of midpoint, taylor, got 'heun'"),
    ],
)
def test_sample_refuses_a_bad_dpmpp_option(tmp_path, option, message):
    result = runner.invoke(app, ["sample", "--solver", "dpmpp", "--nfe", "6", "-o", option, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_order_7_in_a_sample_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump({"solver": "ipndm", "nfe": 5, "options": {"order": 7}, "out": str(tmp_path / "out")})
    )
    result = runner.invoke(app, ["sample", "-c", str(config)])
    assert result.exit_code == 2, result.output
    assert "ipndm option order must be one of 1, 2, 3, 4, got 7" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_benchmark_refuses_a_bad_label_before_any_cell_runs(tmp_path):
    config = tmp_path / "b.yaml"
    solvers = [{"solver": "euler"}, {"solver": "dpmpp", "label": "dpmpp o7", "options": {"order": 7}}]
    config.write_text(yaml.safe_dump({"model": "gmm-2d", "nfe": [4], "num_samples": 8, "solvers": solvers}))
    out = tmp_path / "out"
    result = runner.invoke(app, ["benchmark", "-c", str(config), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "dpmpp option order must be one of 1, 2, 3, got 7" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


# Issue 21: one seed range (0 .. 2^63 - 1) in every generating command; on main a huge seed was a traceback
# (sample, train-amed) or ran (benchmark, compute-ems).
@pytest.mark.parametrize(
    "command",
    [
        ["sample", "--num-samples", "2"],
        ["benchmark", "--model", "gmm-2d", "--solvers", "euler", "--nfe", "4", "--num-samples", "2"],
        ["train-amed", "--model", "gmm-2d", "--set", "num_latents=8"],
        ["compute-ems", "--model", "gmm-2d", "--set", "grid=2", "--set", "num_data=2"],
    ],
)
@pytest.mark.parametrize("seed", ["99999999999999999999", str(2**63), "-1"])
def test_every_command_refuses_a_seed_out_of_range(tmp_path, command, seed):
    out = tmp_path / "out"
    result = runner.invoke(app, [*command, "--seed", seed, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert f"seed must be an integer from 0 to 2^63 - 1 = {2**63 - 1}, got {seed}" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()
