"""Images/s of the Fashion-MNIST feature pass (fd_fmnist) and of the Inception pass (FID), measured in one run.

    python scripts/bench_feature_throughput.py --threads 1 --fmnist-images 10000 --inception-images 64

Both passes take the same uint8 Fashion-MNIST test images (1x32x32) through the whole feature
extractor as the metrics run it (preprocessing included: the 299x299 bicubic resize for Inception).
The first batch of each is a warm-up and is not timed. On a shared CPU the wall-clock rates depend on
the other jobs; the rates per CPU second of this process (time.process_time) do much less, so both are
printed. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from diffsampler.data.datasets import fashion_mnist
from diffsampler.metrics.fmnist_net import locate_fmnist
from diffsampler.metrics.inception import locate_inception


def images_per_second(extractor: torch.nn.Module, images: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Images per wall-clock second and per CPU second of this process, after one untimed warm-up batch."""
    extractor(images[:batch_size])
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(0, len(images), batch_size):
        extractor(images[i : i + batch_size])
    return len(images) / (time.perf_counter() - start), len(images) / (time.process_time() - cpu_start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fmnist-images", type=int, default=10000)
    parser.add_argument("--fmnist-batch", type=int, default=500)
    parser.add_argument("--inception-images", type=int, default=64)
    parser.add_argument("--inception-batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = torch.from_numpy(fashion_mnist("test").transpose(0, 3, 1, 2).copy())
    fmnist = locate_fmnist().load(args.device)
    inception = locate_inception(allow_download=False)
    fast = images_per_second(fmnist, images[: args.fmnist_images].to(args.device), args.fmnist_batch)
    slow = images_per_second(
        inception.load(args.device), images[: args.inception_images].to(args.device), args.inception_batch
    )
    print(
        json.dumps(
            {
                "fmnist_images_per_s": round(fast[0], 1),
                "inception_images_per_s": round(slow[0], 2),
                "ratio": round(fast[0] / slow[0], 1),
                "fmnist_images_per_cpu_s": round(fast[1], 1),
                "inception_images_per_cpu_s": round(slow[1], 2),
                "ratio_cpu": round(fast[1] / slow[1], 1),
                "fmnist_images": args.fmnist_images,
                "inception_images": args.inception_images,
                "inception_weights": inception.origin,
                "threads": args.threads,
                "device": args.device,
                "load_average_1min": os.getloadavg()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
