"""Reader for the IDX format of (Fashion-)MNIST (optionally gzip-compressed)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from diffsampler.errors import UserError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's package dataset-fashion-mnist installs the IDX files."""

_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file: magic 0x0000TTDD (type TT, DD dimensions), sizes, data."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"IDX file not found: {path} (install the Debian package dataset-fashion-mnist or pass a path)")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise UserError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise UserError(f"{path} is truncated or malformed: expected {expected} data bytes, found {len(raw) - offset}")
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape)


def fashion_mnist_file(split: str, kind: str, root: str | Path | None = None) -> Path:
    """Path of a Fashion-MNIST IDX file: split 'train' or 't10k', kind 'images' or 'labels'."""
    base = Path(root) if root is not None else FASHION_MNIST_DIR
    stem = f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
    for name in (stem + ".gz", stem):
        if (base / name).is_file():
            return base / name
    raise UserError(
        f"Fashion-MNIST {split} {kind} not found under {base} "
        "(apt-get install dataset-fashion-mnist, or pass the folder holding the IDX files)"
    )
