"""Build the image-space mixture's means: 50 Fashion-MNIST training images per class (500 in all).

Run once from the repository root; writes diffsampler/models/data/fmnist_means.npz (28x28 uint8,
padded to 32x32 at load). Fashion-MNIST is MIT-licensed (Zalando Research).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffsampler.data.idx import fashion_mnist_file, read_idx

PER_CLASS = 50
SEED = 0


def main() -> None:
    images = read_idx(fashion_mnist_file("train", "images"))
    labels = read_idx(fashion_mnist_file("train", "labels"))
    rng = np.random.default_rng(SEED)
    picks = np.concatenate([rng.choice(np.flatnonzero(labels == c), PER_CLASS, replace=False) for c in range(10)])
    picks.sort()
    out = Path(__file__).resolve().parents[1] / "diffsampler" / "models" / "data" / "fmnist_means.npz"
    np.savez_compressed(out, images=images[picks], labels=labels[picks], train_indices=picks)


if __name__ == "__main__":
    main()
