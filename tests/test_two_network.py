"""The PDM two-network scheme: each sample goes to the patched (high-noise) or full (low-noise) network."""

import pytest
import torch

from diffsampler.errors import UserError
from diffsampler.models import load_model
from diffsampler.models.base import Denoiser
from diffsampler.models.checkpoint import save_checkpoint
from diffsampler.models.two_network import TwoNetworkDenoiser

from unet_helpers import one_thread, tiny_denoiser  # noqa: F401  (autouse fixture)


class Constant(Denoiser):
    """D(x, sigma) = value everywhere; remembers the sigmas it saw."""

    sample_shape = (1, 2, 2)

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.seen: list[float] = []

    def denoise(self, x, sigma, cond=None):
        self.seen += sigma.tolist()
        return torch.full_like(x, self.value)


def test_each_sigma_goes_to_the_right_network():
    high, low = Constant(1.0), Constant(-1.0)
    two = TwoNetworkDenoiser(high, low, switch_sigma=2.0)
    x = torch.zeros(4, 1, 2, 2)
    out = two(x, torch.tensor([80.0, 2.0, 2.5, 0.1], dtype=torch.float64))
    assert out[:, 0, 0, 0].tolist() == [1.0, -1.0, 1.0, -1.0]
    assert high.seen == [80.0, 2.5] and low.seen == [2.0, 0.1]
    assert two.calls == 1


def test_whole_batch_on_one_side_calls_only_that_network():
    high, low = Constant(1.0), Constant(-1.0)
    two = TwoNetworkDenoiser(high, low, switch_sigma=2.0)
    two(torch.zeros(3, 1, 2, 2), 10.0)
    two(torch.zeros(3, 1, 2, 2), 0.5)
    assert (high.calls, low.calls, two.calls) == (1, 1, 2)


def test_features_come_from_the_network_that_served_each_sample():
    high, low = tiny_denoiser(seed=1, patch_size=2, channel_mult=[1]), tiny_denoiser(seed=2, channel_mult=[1])
    two = TwoNetworkDenoiser(high, low)
    x = torch.randn(2, 1, 8, 8)
    sigma = torch.tensor([5.0, 0.5], dtype=torch.float64)
    with torch.no_grad():
        two(x, sigma)
        high(x[:1], sigma[:1])
        low(x[1:], sigma[1:])
    torch.testing.assert_close(two.last_features, torch.cat([high.last_features, low.last_features]))


def test_mismatched_shapes_are_refused():
    with pytest.raises(UserError, match="sample shape"):
        TwoNetworkDenoiser(tiny_denoiser(), tiny_denoiser(image_size=16))


def test_yaml_spec_loads_checkpoints_relative_to_itself(tmp_path):
    save_checkpoint(tmp_path / "p2.pt", tiny_denoiser(patch_size=2, channel_mult=[1]), {}, "float32")
    save_checkpoint(tmp_path / "p1.pt", tiny_denoiser(), {}, "float32")
    spec = tmp_path / "pdm.yaml"
    spec.write_text("kind: two_network\nhigh: p2.pt\nlow: p1.pt\nswitch_sigma: 1.5\n")
    two = load_model(str(spec))
    assert isinstance(two, TwoNetworkDenoiser) and two.switch_sigma == 1.5
    assert two.high.config.patch_size == 2 and two.low.config.patch_size == 1
    spec.write_text("kind: two_network\nhigh: p2.pt\nlow: p1.pt\nswitch: 1.5\n")
    with pytest.raises(UserError, match="unknown key 'switch'"):
        load_model(str(spec))


def test_cli_samples_a_two_network_spec(tmp_path):
    from typer.testing import CliRunner

    from diffsampler.cli import app

    save_checkpoint(tmp_path / "p2.pt", tiny_denoiser(patch_size=2, channel_mult=[1]), {}, "float32")
    save_checkpoint(tmp_path / "p1.pt", tiny_denoiser(), {}, "float32")
    (tmp_path / "pdm.yaml").write_text("kind: two_network\nhigh: p2.pt\nlow: p1.pt\n")
    args = ["sample", "--model", str(tmp_path / "pdm.yaml"), "--solver", "heun", "--nfe", "4", "--num-samples", "2"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path), "--name", "s", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s" / "samples.npz").exists()
