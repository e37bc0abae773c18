"""EDM .pkl checkpoints: refused without trust, loaded with it, foreign or broken pickles refused in one line.

The pickles are built here with tests/edm_fixture, which reproduces the pickle-level format of EDM's
persistent classes (see its README); no real EDM snapshot can be downloaded in the test environment.
"""

import json
import os
import pickle
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from diffsampler.cli import app
from diffsampler.errors import UserError
from diffsampler.models import load_model

FIXTURE = Path(__file__).parent / "edm_fixture"
FIXTURE_MODULES = (
    "torch_utils",
    "torch_utils.persistence",
    "torch_utils.misc",
    "dnnlib",
    "dnnlib.util",
    "training",
    "training.networks",
    "training.augment",
)
runner = CliRunner()


def build_snapshot(path: Path, label_dim: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """Write an EDM-style snapshot {'ema': net, 'augment_pipe': ..., 'dataset_kwargs': EasyDict} to ``path``.

    Returns the network and a reference input/output made before the fixture is unloaded again.
    """
    sys.path.insert(0, str(FIXTURE))
    try:
        from dnnlib.util import EasyDict
        from training.augment import AugmentPipe
        from training.networks import EDMPrecond

        torch.manual_seed(0)
        net = EDMPrecond(img_resolution=8, img_channels=3, label_dim=label_dim)
        x = torch.randn(2, 3, 8, 8)
        labels = torch.eye(label_dim)[[1, 1]] if label_dim else None
        with torch.no_grad():
            ref = net(x, torch.tensor([0.5, 3.0]), labels)
        with path.open("wb") as f:
            pickle.dump({"ema": net, "augment_pipe": AugmentPipe(), "dataset_kwargs": EasyDict(resolution=8)}, f)
    finally:
        sys.path.remove(str(FIXTURE))
        for name in FIXTURE_MODULES:
            sys.modules.pop(name, None)
    return net, x, ref


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    path = tmp_path_factory.mktemp("edm") / "network-snapshot.pkl"
    _, x, ref = build_snapshot(path)
    return path, x, ref


def test_pickle_refused_without_trust_flag(snapshot):
    path, _, _ = snapshot
    with pytest.raises(UserError, match="runs code stored in the file.*--trust-pickle"):
        load_model(f"edm-pkl:{path}")


def test_cli_refuses_pickle_with_exit_2_and_writes_nothing(snapshot, tmp_path):
    path, _, _ = snapshot
    result = runner.invoke(
        app, ["sample", "--model", f"edm-pkl:{path}", "--solver", "euler", "--nfe", "2", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "--trust-pickle" in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_trusted_pickle_loads_and_matches_the_original_network(snapshot):
    path, x, ref = snapshot
    raw = path.read_bytes()
    assert b"_reconstruct_persistent_obj" in raw and b"class EDMPrecond" in raw  # EDM's format: source travels along
    model = load_model(f"edm-pkl:{path}", trust_pickle=True)
    assert not any(name in sys.modules for name in FIXTURE_MODULES)  # stand-ins removed, fixture never imported
    assert model.sample_shape == (3, 8, 8)
    assert (model.sigma_min, model.sigma_max) == (0.002, 80.0)
    got = model(x, torch.tensor([0.5, 3.0], dtype=torch.float64))
    assert model.calls == 1
    assert torch.equal(got, ref)  # the same float32 network on the same input: bit-identical
    assert load_model(str(path), trust_pickle=True).content_hash() == model.content_hash()  # .pkl suffix detection


def test_entry_whose_source_cannot_run_is_refused_only_when_chosen(snapshot):
    """EDM's AugmentPipe imports torch_utils.misc, which the loader does not provide: the network still loads."""
    path, _, _ = snapshot
    with pytest.raises(UserError, match=r"'augment_pipe' entry .*\(AugmentPipe\) cannot be rebuilt.*misc") as info:
        load_model(f"edm:{path}", trust_pickle=True, options={"key": "augment_pipe"})
    assert "\n" not in str(info.value)


def test_cli_samples_from_a_trusted_pickle(snapshot, tmp_path):
    path, _, _ = snapshot
    result = runner.invoke(
        app,
        [
            "sample",
            "--model",
            f"edm-pkl:{path}",
            "--trust-pickle",
            "--solver",
            "heun",
            "--nfe",
            "4",
            "--num-samples",
            "3",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "edm-pkl-network-snapshot-heun-nfe4" / "meta.json").read_text())
    assert meta["nfe"] == 4 and meta["model"]["class"] == "EDMPickleDenoiser"


def test_class_conditional_pickle_needs_a_label(tmp_path):
    path = tmp_path / "cond.pkl"
    _, x, ref = build_snapshot(path, label_dim=4)
    with pytest.raises(UserError, match="class_label=K"):
        load_model(f"edm-pkl:{path}", trust_pickle=True)
    model = load_model(f"edm-pkl:{path}", trust_pickle=True, options={"class_label": 1})
    assert torch.equal(model(x, torch.tensor([0.5, 3.0], dtype=torch.float64)), ref)


class _Foreign:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize(
    "payload, message",
    [
        (pickle.dumps({"ema": _Foreign()}), "refers to posix.getcwd"),
        (b"\x80\x04this is not a pickle", "not a readable EDM pickle"),
        (pickle.dumps({"ema": torch.nn.Linear(2, 2)})[:-40], "not a readable EDM pickle"),
        (pickle.dumps({"net": 1}), "no network under 'ema'"),
    ],
)
def test_foreign_or_broken_pickles_give_one_line_errors(tmp_path, payload, message):
    path = tmp_path / "bad.pkl"
    path.write_bytes(payload)
    with pytest.raises(UserError, match=message) as info:
        load_model(f"edm:{path}", trust_pickle=True)
    assert "\n" not in str(info.value)
