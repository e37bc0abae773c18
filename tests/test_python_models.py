"""``--model python:FILE.py:NAME``: the user's own network, from a file written to a temporary folder outside the
repository, in every command that takes a model; its prediction conventions; its bad inputs (one line, exit 2,
nothing written)."""

import importlib
import importlib.util
import json
import sys
import textwrap
import types

import pytest
import torch
from typer.testing import CliRunner

import diffsampler as ds
from diffsampler.cli import app
from diffsampler.errors import UserError
from diffsampler.models import load_model

runner = CliRunner()

PLAIN_NET = """
import torch

class Net(torch.nn.Module):
    sample_shape = (1, 4, 4)

    def __init__(self, scale=0.5):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full((1,), float(scale)))

    def forward(self, x, sigma):
        return x * self.weight / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)
"""
"""A plain nn.Module with forward(x, sigma) (no cond parameter) and a sample_shape: the issue's user."""


def write(folder, name, text):
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def run(args, folder):
    result = runner.invoke(app, [*args], catch_exceptions=False, env={"COLUMNS": "200"})
    return result.exit_code, result.output


@pytest.fixture
def user_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return write(tmp_path, "mynet.py", PLAIN_NET)


def test_benchmark_runs_a_plain_module_and_an_edited_file_recomputes(user_file, tmp_path):
    args = ["benchmark", "--model", f"python:{user_file}:Net", "--nfe", "5", "--solvers", "euler,ipndm"]
    args += ["--metrics", "rmse", "--num-samples", "8", "--out", str(tmp_path / "out"), "--name", "run"]
    code, out = run(args, tmp_path)
    assert code == 0, out
    assert "2 cells sampled, 0 reused" in out
    records = sorted((tmp_path / "out" / "run" / "records").rglob("rmse.json"))
    first = [json.loads(p.read_text())["value"] for p in records]
    assert len(first) == 2 and all(v > 0 for v in first)
    code, out = run(args, tmp_path)
    assert code == 0 and "0 cells sampled, 2 reused" in out, out
    user_file.write_text(PLAIN_NET.replace("x * self.weight", "x * self.weight * 0.9"))
    code, out = run(args, tmp_path)
    assert code == 0 and "2 cells sampled, 0 reused" in out, out
    second = [json.loads(p.read_text())["value"] for p in records]
    assert second != first  # the edited model's numbers, not the cached ones


def test_model_options_reach_the_factory_and_the_hash(user_file):
    a = load_model(f"python:{user_file}:Net", options={"scale": 0.5})
    b = load_model(f"python:{user_file}:Net", options={"scale": 0.25})
    assert float(b.net.weight.detach()) == 0.25
    assert a.content_hash() != b.content_hash()
    assert a.content_hash() == load_model(f"python:{user_file}:Net", options={"scale": 0.5}).content_hash()


def test_train_amed_compute_ems_and_search_schedule_run_on_the_same_model(user_file, tmp_path):
    model = f"python:{user_file}:Net"
    code, out = run(["train-amed", "--model", model, "--nfe", "3", "--set", "num_latents=16",
                     "--set", "batch_size=8", "--name", "p"], tmp_path)  # fmt: skip
    assert code == 0, out
    assert (tmp_path / "results" / "amed" / "p.pt").is_file()
    ems = tmp_path / "ems"
    code, out = run(["compute-ems", "--model", model, "--set", "grid=4", "--set", "num_data=8",
                     "--set", "batch_size=8", "--out", str(ems)], tmp_path)  # fmt: skip
    assert code == 0, out
    assert (ems / "l.npz").is_file() and (ems / "sb.npz").is_file()
    schedule = tmp_path / "s.json"
    code, out = run(["search-schedule", "--model", model, "--nfe", "3", "--set", "num_samples=8",
                     "--set", "iterations=1", "--out", str(schedule)], tmp_path)  # fmt: skip
    assert code == 0, out
    assert len(json.loads(schedule.read_text())["sigmas"]) == 4


def test_a_module_path_loads_and_its_file_enters_the_hash(tmp_path, monkeypatch):
    package = tmp_path / "usernets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    write(package, "nets.py", PLAIN_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = load_model("python:usernets.nets:Net")
    assert model.sample_shape == (1, 4, 4)
    assert model.describe()["code_sha256"] == load_model(f"python:{package / 'nets.py'}:Net").describe()["code_sha256"]


BAD_FILES = {
    "missing": (None, "Net", "file nope.py not found"),
    "import": ("import torch\nraise ValueError('first line\\nsecond line')\n", "Net", "first line second line"),
    "name": (PLAIN_NET, "Nett", "did you mean 'Net'"),
    "string": ("def Net():\n    return 'a string'\n", "Net", "returned a str"),
    "shape": (
        PLAIN_NET.replace("return x *", "return x[:, :, :2] *"),
        "Net",
        "returned shape [2, 1, 2, 4] for input [2, 1, 4, 4]",
    ),
    "no_shape": (PLAIN_NET.replace("sample_shape = (1, 4, 4)", "pass"), "Net", "no sample shape"),
    "nan": (PLAIN_NET.replace("return x *", "return float('nan') * x *"), "Net", "NaN or infinite"),
    "flow_shift": (
        PLAIN_NET.replace("sample_shape", "prediction = 'flow'\n    shift = 0\n    sample_shape"),
        "Net",
        "shift must be a positive number",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_user_files_are_one_line_exit_2_and_nothing_written(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text, name, expected = BAD_FILES[case]
    path = "nope.py" if text is None else write(tmp_path, "bad.py", text).name
    code, out = run(["sample", "--model", f"python:{path}:{name}", "--solver", "euler", "--nfe", "3"], tmp_path)
    assert code == 2, out
    line = " ".join(out.split())  # the terminal may wrap the one line
    assert line.startswith(f"error: python:{path}:{name}") and expected in line, out
    assert "\x1b" not in out
    assert not (tmp_path / "results").exists()


def test_a_torch_saved_whole_module_gets_torch_s_message_whole_and_plain(user_file, tmp_path):
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("mynet")
        torch.save(module.Net(), tmp_path / "whole.pt")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("mynet", None)
    code, out = run(["sample", "--model", "whole.pt", "--solver", "euler", "--nfe", "3"], tmp_path)
    line = " ".join(out.split())
    assert code == 2
    assert "\x1b" not in out  # torch's message carries bold codes: stripped
    assert "add_safe_globals([mynet.Net])" in line  # brackets are not read as terminal markup
    assert line.endswith("https://pytorch.org/docs/stable/generated/torch.load.html.")  # not cut mid-sentence
    assert "python:FILE.py:NAME" in line


# The prediction conventions on an analytic model: the Gaussian mixture's exact D(x, sigma), expressed as eps and
# v, must give the samples of its x0 form. Both run in float64; the conversions differ from the x0 form by a few
# roundings of values up to sigma_max * |x| ~ 1e4, so 1e-9 absolute bounds them with a wide margin.
CONVENTIONS = """
import math
import torch
from diffsampler.models.builtin import toy_2d

class Eps(torch.nn.Module):
    sample_shape = (2,)
    prediction = "eps"

    def __init__(self):
        super().__init__()
        self.gmm = toy_2d()

    def forward(self, x, sigma):
        s = sigma.reshape(-1, 1)
        return (x - self.gmm(x, sigma)) / s

class V(Eps):
    prediction = "v"
    sigma_data = 0.5

    def forward(self, x_in, t):
        sigma = torch.tan(t * math.pi / 2)
        s = sigma.reshape(-1, 1)
        total = s**2 + self.sigma_data**2
        x = x_in * total.sqrt()
        c_skip, c_out = self.sigma_data**2 / total, -s * self.sigma_data / total.sqrt()
        return (self.gmm(x, sigma) - c_skip * x) / c_out

def ours():
    return toy_2d()
"""


@pytest.mark.parametrize("name", ["Eps", "V", "ours"])
def test_eps_and_v_forms_of_an_analytic_model_sample_as_its_x0_form(name, tmp_path):
    path = write(tmp_path, "conv.py", CONVENTIONS)
    settings = dict(solver="ipndm", nfe=6, num_samples=16, dtype="float64")
    reference = ds.sample("gmm-2d", **settings).samples
    got = ds.sample(ds.load_model(f"python:{path}:{name}"), **settings).samples
    if name == "ours":
        assert torch.equal(got, reference)  # our own Denoiser, wrapped: untouched
    else:
        assert (got - reference).abs().max() < 1e-9


def _k_external():
    """k_diffusion.external without the package's __init__ (which imports its training extras)."""
    if "k_diffusion" not in sys.modules:
        spec = importlib.util.find_spec("k_diffusion")
        if spec is None:
            pytest.skip("k-diffusion is not installed (pip install '.[test]')")
        package = types.ModuleType("k_diffusion")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec  # so that later importlib.util.find_spec("k_diffusion") calls still work
        sys.modules["k_diffusion"] = package
    return importlib.import_module("k_diffusion.external")


def test_v_prediction_equals_k_diffusion_s_vdenoiser(tmp_path):
    """The same inner network through k-diffusion's VDenoiser and through prediction=v; float64, so 1e-12."""
    write(tmp_path, "inner.py", """
        import torch

        class Inner(torch.nn.Module):
            sample_shape = (3,)
            prediction = "v"

            def forward(self, x, t):
                return torch.sin(3 * x) * (1 + t.reshape(-1, 1)) + t.reshape(-1, 1) ** 2
        """)  # fmt: skip
    model = load_model(f"python:{tmp_path / 'inner.py'}:Inner")
    theirs = _k_external().VDenoiser(model.net)
    x = torch.randn(5, 3, dtype=torch.float64) * 4
    sigma = torch.tensor([0.01, 0.3, 1.0, 7.0, 80.0], dtype=torch.float64)
    assert (model(x, sigma) - theirs(x, sigma)).abs().max() < 1e-12


def test_eps_prediction_is_x_minus_sigma_eps(tmp_path):
    write(tmp_path, "e.py", "def make():\n    return lambda x, sigma: x * 0 + 2.0\n")
    model = load_model(f"python:{tmp_path / 'e.py'}:make", options={"prediction": "eps", "shape": [2]})
    x = torch.ones(1, 2)
    assert torch.equal(model(x, 0.5), x - 0.5 * 2.0)


def test_cond_is_passed_as_keywords_and_refused_by_a_model_without_cond(tmp_path):
    write(tmp_path, "c.py", """
        import torch

        def with_cond():
            def f(x, sigma, *, label=0):
                return x * 0 + label
            f.sample_shape = (2,)
            return f

        def without():
            def f(x, sigma):
                return x * 0
            f.sample_shape = (2,)
            return f
        """)  # fmt: skip
    x = torch.zeros(1, 2)
    assert torch.equal(load_model(f"python:{tmp_path / 'c.py'}:with_cond")(x, 1.0, {"label": 3}), x + 3)
    with pytest.raises(UserError, match="takes no conditioning"):
        load_model(f"python:{tmp_path / 'c.py'}:without")(x, 1.0, {"label": 3})
