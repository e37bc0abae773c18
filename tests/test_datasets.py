"""Dataset loaders: Fashion-MNIST IDX, image folders and zips, .npz, and their errors."""

import gzip
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from diffsampler.data.datasets import from_model_range, load_images, to_model_range
from diffsampler.data.idx import read_idx
from diffsampler.errors import UserError


def _write_idx(path, arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_round_trip_and_fashion_mnist_padding(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs)
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), imgs)
    out = load_images(f"fashion-mnist:train={tmp_path}")
    assert out.shape == (5, 32, 32, 1)
    assert np.array_equal(out[:, 2:30, 2:30, 0], imgs) and out[:, :2].max() == 0


def test_truncated_idx_is_refused(tmp_path):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"abc")
    with pytest.raises(UserError, match="truncated"):
        read_idx(path)


def test_missing_fashion_mnist_names_the_package(tmp_path):
    with pytest.raises(UserError, match="dataset-fashion-mnist"):
        load_images(f"fashion-mnist={tmp_path}")


def test_folder_and_zip(tmp_path):
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(3)]
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"{i}.png")
    assert np.array_equal(load_images(folder), np.stack(arrays))
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as zf:
        for i in range(3):
            zf.write(folder / f"{i}.png", f"x/{i}.png")
    assert np.array_equal(load_images(tmp_path / "imgs.zip"), np.stack(arrays))


def test_folder_errors(tmp_path):
    with pytest.raises(UserError, match="no images found"):
        load_images(tmp_path)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(UserError, match="differ in size"):
        load_images(tmp_path)
    with pytest.raises(UserError, match="not found"):
        load_images(tmp_path / "nope")


def test_npz_float_and_uint8(tmp_path):
    x = torch.rand(4, 1, 6, 6) * 2 - 1
    np.savez(tmp_path / "s.npz", samples=x.numpy())
    assert np.array_equal(load_images(tmp_path / "s.npz"), from_model_range(x))
    u = np.random.default_rng(2).integers(0, 256, (4, 3, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "u.npz", images=u)
    assert np.array_equal(load_images(tmp_path / "u.npz"), u.transpose(0, 2, 3, 1))
    np.savez(tmp_path / "n.npz", samples=np.full((2, 1, 4, 4), np.nan, np.float32))
    with pytest.raises(UserError, match="NaN"):
        load_images(tmp_path / "n.npz")


def test_model_range_round_trip():
    u = np.random.default_rng(3).integers(0, 256, (2, 5, 5, 3), dtype=np.uint8)
    assert np.array_equal(from_model_range(to_model_range(u)), u)
