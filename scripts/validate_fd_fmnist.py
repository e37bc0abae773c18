"""fd_fmnist and kid_fmnist of the Fashion-MNIST test images, whole and damaged, against the training set's statistics.

    python scripts/validate_fd_fmnist.py [--cache-dir DIR] [--json OUT.json]

The floor is the test set itself (10,000 images; also its first 2,000 and 500, since the Frechet
distance of a finite set carries a bias that grows as the set shrinks). Damage, applied in [-1, 1] to
all 10,000 test images before the uint8 rounding every sample goes through: Gaussian noise of standard
deviation 0.05, 0.1, 0.2 and 0.4; Gaussian blur of 0.5, 1 and 1.5 pixels; each image's pixels shuffled.
Fixed seeds. Prints a Markdown table (and writes JSON when asked).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torchvision.transforms.functional import gaussian_blur

from diffsampler.data.datasets import fashion_mnist, from_model_range, to_model_range
from diffsampler.metrics.fid import (
    feature_statistics,
    fid_from_statistics,
    kernel_inception_distance,
)
from diffsampler.metrics.fmnist_net import BATCH_SIZE, locate_fmnist
from diffsampler.metrics.ref_stats import reference_statistics


def corruptions(images: np.ndarray) -> dict[str, np.ndarray]:
    """Named uint8 image sets: the test set, its subsets and its damaged copies."""
    x = to_model_range(images)
    gen = torch.Generator().manual_seed(0)
    sets = {"test 10k (floor)": images, "test first 2k": images[:2000], "test first 500": images[:500]}
    for std in (0.05, 0.1, 0.2, 0.4):
        sets[f"noise std {std}"] = from_model_range(x + std * torch.randn(x.shape, generator=gen))
    for sigma in (0.5, 1.0, 1.5):
        sets[f"blur {sigma} px"] = from_model_range(
            gaussian_blur(x, kernel_size=2 * int(3 * sigma + 0.5) + 1, sigma=sigma)
        )
    flat = x.flatten(1)
    order = torch.argsort(torch.rand(flat.shape, generator=gen), dim=1)
    sets["pixels shuffled"] = from_model_range(torch.gather(flat, 1, order).reshape(x.shape))
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    weights = locate_fmnist()
    start = time.perf_counter()
    ref = reference_statistics("fashion-mnist:train", weights, args.cache_dir, BATCH_SIZE, keep_features=True)
    ref_seconds = time.perf_counter() - start
    net, rows = weights.load("cpu"), []
    for name, images in corruptions(fashion_mnist("test")).items():
        stats = feature_statistics(net, images, BATCH_SIZE, keep_features=True)
        rows.append(
            {
                "set": name,
                "images": len(images),
                "fd_fmnist": fid_from_statistics(stats, ref.stats),
                "kid_fmnist": kernel_inception_distance(stats.features, ref.stats.features),
            }
        )
    print(
        f"training-set statistics: {'cache hit' if ref.cache_hit else 'computed'} in {ref_seconds:.1f} s ({ref.path})\n"
    )
    print("| set | images | fd_fmnist | kid_fmnist |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['set']} | {row['images']} | {row['fd_fmnist']:.3f} | {row['kid_fmnist']:.5f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"reference_seconds": ref_seconds, "cache_hit": ref.cache_hit, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
