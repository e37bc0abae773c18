"""Image datasets as uint8 arrays (N, H, W, C): Fashion-MNIST IDX files, image folders and zips, .npz.

A *source* is one string: ``fashion-mnist`` (``:train`` or ``:test``, optionally ``=FOLDER`` for the
IDX files' folder), a folder of images, a ``.zip`` of images, or an ``.npz`` array file.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffsampler.data.idx import fashion_mnist_file, read_idx
from diffsampler.errors import UNREADABLE_FILE, UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
NPZ_KEYS = ("samples", "images", "arr_0", "x")


def fashion_mnist(split: str = "train", root: str | Path | None = None, pad_to: int = 32) -> np.ndarray:
    """Fashion-MNIST images zero-padded from 28x28 to ``pad_to`` square, uint8 (N, H, W, 1)."""
    idx_split = {"train": "train", "test": "t10k", "t10k": "t10k"}.get(split)
    if idx_split is None:
        raise UserError(f"Fashion-MNIST split must be 'train' or 'test', got '{split}'")
    images = read_idx(fashion_mnist_file(idx_split, "images", root))
    if images.ndim != 3:
        raise UserError(f"Fashion-MNIST images must have 3 dimensions, found shape {images.shape}")
    pad = (pad_to - images.shape[1]) // 2
    if pad < 0:
        raise UserError(f"cannot pad {images.shape[1]}x{images.shape[2]} images to {pad_to}")
    return np.pad(images, ((0, 0), (pad, pad_to - images.shape[1] - pad), (pad, pad_to - images.shape[2] - pad)))[
        ..., None
    ]


def _decode(name: str, data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            arr = np.asarray(img.convert("L" if img.mode in ("L", "1", "I", "I;16") else "RGB"))
    except Exception as exc:
        raise UserError(f"cannot read image {name}: {exc}") from exc
    return arr[..., None] if arr.ndim == 2 else arr


def _stack(named: list[tuple[str, np.ndarray]], where: str) -> np.ndarray:
    if not named:
        raise UserError(f"no images found in {where} (looked for {', '.join(IMAGE_SUFFIXES)})")
    first_name, first = named[0]
    for name, arr in named[1:]:
        if arr.shape != first.shape:
            raise UserError(f"images in {where} differ in size: {first_name} is {first.shape}, {name} is {arr.shape}")
    return np.stack([arr for _, arr in named])


def image_folder(folder: str | Path) -> np.ndarray:
    """All images below a folder (sorted by relative path), uint8 (N, H, W, C); sizes must agree."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"image folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return _stack([(str(p.relative_to(root)), _decode(str(p), p.read_bytes())) for p in files], str(root))


def image_zip(path: str | Path) -> np.ndarray:
    """All images inside a zip file (sorted by member name), uint8 (N, H, W, C)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = sorted(n for n in zf.namelist() if Path(n).suffix.lower() in IMAGE_SUFFIXES)
            return _stack([(n, _decode(n, zf.read(n))) for n in names], str(path))
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"cannot read zip file {path}: {exc}") from exc


def npz_images(path: str | Path) -> np.ndarray:
    """Images from an .npz: uint8 NHWC/NCHW, or floats in [-1, 1] NCHW (as `diffsampler sample` writes)."""
    path = Path(path)
    try:
        with np.load(path) as data:
            key = next((k for k in NPZ_KEYS if k in data.files), data.files[0] if data.files else None)
            if key is None:
                raise UserError(f"{path} holds no arrays")
            arr = data[key]
    except UNREADABLE_FILE as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    if arr.ndim != 4:
        raise UserError(f"{path}['{key}'] must be a batch of images (4 dimensions), found shape {arr.shape}")
    if arr.dtype.kind not in "uif":
        raise UserError(f"{path}['{key}'] has dtype {arr.dtype}; images are uint8 pixels or real floats in [-1, 1]")
    if arr.dtype.kind in "ui" and arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
        found = f"integers from {arr.min()} to {arr.max()}"
        raise UserError(f"{path}['{key}'] holds {found}; integer pixels must lie in 0..255")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise UserError(f"{path}['{key}'] contains NaN or infinite values")
        arr = from_model_range(torch.from_numpy(np.ascontiguousarray(arr)))
    else:
        arr = arr.astype(np.uint8, copy=False)
        if arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = arr.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(arr)


def load_images(source: str | Path) -> np.ndarray:
    """uint8 (N, H, W, C) images from any supported source (see the module docstring)."""
    text = str(source)
    if text.startswith("fashion-mnist"):
        name, _, root = text.partition("=")
        split = name.partition(":")[2] or "train"
        return fashion_mnist(split, root or None)
    path = Path(text)
    if path.is_dir():
        return image_folder(path)
    if not path.exists():
        raise UserError(f"data source not found: {path} (give a folder, a .zip, an .npz or 'fashion-mnist')")
    if path.suffix.lower() == ".zip":
        return image_zip(path)
    if path.suffix.lower() == ".npz":
        return npz_images(path)
    raise UserError(f"unsupported data source {path}: give a folder of images, a .zip, an .npz or 'fashion-mnist'")


def to_model_range(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [-1, 1] by x / 127.5 - 1."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float() / 127.5 - 1.0


def from_model_range(images: torch.Tensor) -> np.ndarray:
    """float (N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C) by round((x + 1) * 127.5), clipped."""
    arr = images.detach().cpu().numpy().astype(np.float64)
    return np.clip(np.rint((arr + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
