"""The EDM-preconditioned U-Net denoiser and its checkpoint format."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from diffsampler.config import load_config
from diffsampler.errors import UserError
from diffsampler.models import load_model
from diffsampler.models.checkpoint import checkpoint_bytes, load_checkpoint, save_checkpoint
from diffsampler.models.unet import SMALL_MAP_PIXELS, GroupNorm32, UNetDenoiser, count_parameters
from diffsampler.train import TrainConfig

from unet_helpers import one_thread, tiny_config, tiny_denoiser  # noqa: F401  (autouse fixture)

ROOT = Path(__file__).resolve().parents[1]


class Recorder(nn.Module):
    """Stands in for the U-Net F: returns 3 * its input and records c_noise."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(1, 1, 1)
        self.bottleneck = None
        self.c_noise = None

    def forward(self, x, c_noise):
        self.c_noise = c_noise
        return 3 * x


def test_edm_preconditioning_matches_table_1():
    """D = c_skip x + c_out F(c_in x, c_noise) with EDM Table 1's coefficients; float32 rounding only (rtol 1e-5)."""
    model = UNetDenoiser(tiny_config(sigma_data=0.5))
    model.net = Recorder()
    x = torch.randn(3, 1, 8, 8)
    sigma = torch.tensor([0.01, 0.5, 40.0], dtype=torch.float64)
    out = model(x, sigma)
    sd = 0.5
    for b, s in enumerate(sigma.tolist()):
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / math.sqrt(s**2 + sd**2)
        c_in = 1 / math.sqrt(s**2 + sd**2)
        torch.testing.assert_close(out[b], (c_skip + 3 * c_out * c_in) * x[b], rtol=1e-5, atol=1e-6)
        assert model.net.c_noise[b].item() == pytest.approx(math.log(s) / 4, rel=1e-6)


def test_denoiser_shapes_features_and_call_count():
    model = tiny_denoiser()
    x = torch.randn(2, 1, 8, 8)
    assert model(x, 1.0).shape == x.shape
    assert model.last_features.shape == (2, 16)
    feats = model.features(x, 2.0)
    assert feats.shape == (2, 16) and model.calls == 2


@pytest.mark.parametrize("p", [2, 4])
def test_patched_denoiser_maps_image_to_image(p):
    model = tiny_denoiser(patch_size=p, channel_mult=[1], attention_resolutions=[])
    x = torch.randn(2, 1, 8, 8)
    assert model(x, 1.0).shape == x.shape


def test_invalid_shape_is_a_user_error():
    with pytest.raises(UserError, match="divisible"):
        UNetDenoiser(tiny_config(image_size=8, patch_size=4, channel_mult=[1, 2, 2]))


@pytest.mark.parametrize("config", sorted((ROOT / "configs/train").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_train_configs_are_valid_and_fit_16_mib(config):
    """Every training config builds its U-Net (Fashion-MNIST is 1x32x32) and stays under 16 MiB stored as float16."""
    cfg = load_config(TrainConfig, config, {})
    size = cfg.image_size or 32
    assert 2 * count_parameters(UNetDenoiser(cfg.unet_config(1, size))) < 16 * 2**20


def test_checkpoint_round_trip_loads_by_path(tmp_path):
    model = tiny_denoiser()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, {"step": 7}, dtype="float32")
    loaded = load_model(str(path))
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():  # channels-last weights: float32 summation order only (see the test below)
        torch.testing.assert_close(loaded(x, 0.7), model(x, 0.7), rtol=1e-5, atol=1e-6)
    assert loaded.checkpoint_meta["step"] == 7
    assert loaded.describe()["checkpoint"]["step"] == 7


def test_loaded_checkpoint_runs_channels_last_with_equal_outputs(tmp_path):
    """Loaded weights are channels-last; outputs equal the NCHW model's up to float32 summation order (rtol 1e-5,
    atol 1e-6: oneDNN blocks the convolution sums differently; 3e-8 apart on outputs of size 1 here)."""
    model = tiny_denoiser(patch_size=2)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, {}, dtype="float32")
    loaded = load_checkpoint(path)
    assert loaded.net.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.net.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        out = loaded(x, 0.7)
        torch.testing.assert_close(out, model(x, 0.7), rtol=1e-5, atol=1e-6)
    assert out.shape == x.shape
    assert loaded.content_hash() == model.content_hash()


def test_float16_checkpoint_is_close(tmp_path):
    """float16 storage rounds each weight to 11 significant bits: outputs agree to about 1e-3."""
    model = tiny_denoiser()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, {}, dtype="float16")
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint(path)(x, 0.7), model(x, 0.7), rtol=1e-2, atol=1e-2)


def test_corrupt_checkpoint_is_refused(tmp_path):
    path = tmp_path / "bad.pt"
    blob = bytearray(checkpoint_bytes(tiny_denoiser(), {}, "float32"))
    path.write_bytes(bytes(blob[: len(blob) // 2]))
    with pytest.raises(UserError, match="corrupt"):
        load_model(str(path))


def test_tampered_weights_are_refused(tmp_path):
    path = tmp_path / "t.pt"
    save_checkpoint(path, tiny_denoiser(), {}, "float32")
    payload = torch.load(path, weights_only=True)
    next(iter(payload["state_dict"].values())).add_(1.0)
    torch.save(payload, path)
    with pytest.raises(UserError, match="sha256"):
        load_checkpoint(path)


def test_checkpoint_with_mismatched_config_is_refused(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, tiny_denoiser(), {}, "float32")
    payload = torch.load(path, weights_only=True)
    payload["unet"]["channels"] = 16
    torch.save(payload, path)
    with pytest.raises(UserError, match="does not match"):
        load_checkpoint(path)


def test_foreign_file_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(UserError, match="not a diffsampler model checkpoint"):
        load_model(str(path))
    with pytest.raises(UserError, match="not found"):
        load_model(str(tmp_path / "missing.pt"))


def test_checkpoint_registered_by_name(tmp_path):
    from diffsampler.models import MODELS, register_checkpoint

    save_checkpoint(tmp_path / "m.pt", tiny_denoiser(), {"step": 3}, "float32")
    register_checkpoint("test-tiny-unet", tmp_path / "m.pt", "a tiny test U-Net")
    try:
        assert load_model("test-tiny-unet").checkpoint_meta["step"] == 3
    finally:
        del MODELS["test-tiny-unet"]


def test_noise_embedding_is_smooth_in_log_sigma():
    """Closed form: with c = ln(sigma)/4 and frequencies a w_k <= a, each feature's slope in ln(sigma) is at most a/4.
    The default a = 1 keeps it at 1/4 (measured by finite differences, 1% slack for float32 rounding)."""
    from diffsampler.models.unet import UNetConfig, noise_embedding

    scale = UNetConfig().noise_embedding_scale
    log_sigma = torch.linspace(math.log(0.002), math.log(80.0), 201, dtype=torch.float64)
    delta = 1e-3
    e0 = noise_embedding(log_sigma / 4, 32, scale)
    e1 = noise_embedding((log_sigma + delta) / 4, 32, scale)
    assert float((e1 - e0).abs().max()) / delta <= 1.01 * scale / 4
    assert scale <= 4.0  # a feature turns at most one radian per unit of ln(sigma)


def test_version_1_checkpoint_keeps_its_noise_embedding_scale(tmp_path):
    """Version-1 checkpoints have no noise_embedding_scale key and were trained with 1000: they load with it."""
    legacy = tiny_denoiser(noise_embedding_scale=1000.0)
    path = tmp_path / "v1.pt"
    save_checkpoint(path, legacy, {}, "float32")
    payload = torch.load(path, weights_only=True)
    payload["version"] = 1
    del payload["unet"]["noise_embedding_scale"]
    torch.save(payload, path)
    loaded = load_checkpoint(path)
    assert loaded.config.noise_embedding_scale == 1000.0
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, 0.7), legacy(x, 0.7), rtol=1e-5, atol=1e-6)
    save_checkpoint(path, tiny_denoiser(), {}, "float32")
    assert load_checkpoint(path).config.noise_embedding_scale == 1.0


@pytest.mark.parametrize("channels_last", [False, True])
def test_group_norm_32_runs_small_low_precision_maps_in_float32(channels_last):
    """GroupNorm32 is nn.GroupNorm (exactly, the same kernel) on float32 and float64 input and on bf16 maps above
    SMALL_MAP_PIXELS; on smaller bf16 maps it returns float32 equal to nn.GroupNorm of the upcast input."""
    torch.manual_seed(0)
    ours, ref = GroupNorm32(4, 16), nn.GroupNorm(4, 16)
    nn.init.normal_(ours.weight), nn.init.normal_(ours.bias)
    ref.load_state_dict(ours.state_dict())
    for size in (8, 32):  # 64 and 1024 pixels, either side of SMALL_MAP_PIXELS
        x = 3 * torch.randn(2, 16, size, size) + 1
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        assert torch.equal(ours(x), ref(x))
        assert torch.equal(ours.double()(x.double()), ref.double()(x.double()))
        ours.float(), ref.float()
        low = x.to(torch.bfloat16)
        if size * size <= SMALL_MAP_PIXELS:
            assert ours(low).dtype == torch.float32 and torch.equal(ours(low), ref(low.float()))
        else:
            assert torch.equal(ours(low), ref.to(torch.bfloat16)(low))
            ref.float()
