"""YAML configs: typed loading, CLI overrides, and one-line errors for bad input."""

import pytest

from diffsampler.config import SampleConfig, load_config, parse_assignments
from diffsampler.errors import UserError


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_loads_typed_and_overrides_win(tmp_path):
    path = _write(tmp_path, "model: gmm-2d\nsolver: heun\nnfe: 6\nsigma_max: 10\noptions: {afs: true}\n")
    cfg = load_config(SampleConfig, path, {"nfe": 8, "seed": None})
    assert cfg.model == "gmm-2d" and cfg.solver == "heun" and cfg.nfe == 8 and cfg.run.seed == 0
    assert isinstance(cfg.sigma_max, float) and cfg.sigma_max == 10.0
    assert cfg.options == {"afs": True}


def test_unknown_key_suggests_the_right_one(tmp_path):
    path = _write(tmp_path, "solvr: heun\n")
    with pytest.raises(UserError, match=r"unknown key in .*c.yaml 'solvr' \(did you mean 'solver'\?\)"):
        load_config(SampleConfig, path, {})


@pytest.mark.parametrize(
    "text, message",
    [
        ("nfe: five\n", "'nfe' must be an integer"),
        ("nfe: 2.5\n", "'nfe' must be an integer"),
        ("num_samples: true\n", "'num_samples' must be an integer"),
        ("sigma_max: abc\n", "'sigma_max' must be a number"),
        ("sigmas: 3\n", "'sigmas' must be a list"),
        ("options: [1]\n", "'options' must be a mapping"),
        ("nfe: 0\n", "nfe must be at least 1"),
        ("device: tpu\n", "unknown device 'tpu'"),
        ("- a\n- b\n", "must hold a mapping"),
        ("a: [\n", "not valid YAML at line"),
        ("sigmas: [3, 1]\nschedule: logsnr\n", "not both"),
    ],
)
def test_bad_values_are_one_line_errors(tmp_path, text, message):
    with pytest.raises(UserError, match=message) as info:
        load_config(SampleConfig, _write(tmp_path, text), {})
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(SampleConfig, tmp_path / "nope.yaml", {})


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(SampleConfig, _write(tmp_path, ""), {}) == SampleConfig()


def test_parse_assignments_reads_yaml_values():
    assert parse_assignments(["afs=true", "r=0.25", "name=x"]) == {"afs": True, "r": 0.25, "name": "x"}
    with pytest.raises(UserError, match="expected key=value"):
        parse_assignments(["afs"])


def test_set_items_override_the_file_and_flags_override_both(tmp_path):
    path = _write(tmp_path, "model: gmm-2d\nnfe: 6\nseed: 3\noptions: {afs: true}\n")
    cfg = load_config(SampleConfig, path, {"seed": 5}, ["nfe=8", "seed=4", "options.order=2", "sigmas=[3, 1]"])
    assert (cfg.model, cfg.nfe, cfg.run.seed) == ("gmm-2d", 8, 5)
    assert cfg.options == {"afs": True, "order": 2} and cfg.sigmas == [3.0, 1.0]


@pytest.mark.parametrize(
    "text, sets, message",
    [
        ("solvr: heun\n", ["nfe=8"], r"unknown key in .*c.yaml 'solvr'"),
        ("solver: heun\n", ["solvr=euler"], r"unknown key in --set 'solvr' \(did you mean 'solver'\?\)"),
        ("solver: heun\n", ["solver.order=2"], r"'solver' is not a mapping"),
    ],
)
def test_an_unknown_key_names_its_source(tmp_path, text, sets, message):
    with pytest.raises(UserError, match=message) as info:
        load_config(SampleConfig, _write(tmp_path, text), {}, sets)
    assert "\n" not in str(info.value)
