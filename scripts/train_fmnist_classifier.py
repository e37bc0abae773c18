"""Train the Fashion-MNIST classifier behind fd_fmnist / kid_fmnist on the CPU and write it into the package.

    python scripts/train_fmnist_classifier.py            # ~10 min on one core of a shared 2-core AMD EPYC

Writes diffsampler/metrics/data/fmnist_classifier.pt (float16 state dict, batch norm folded) and
fmnist_classifier.json (sha256, data hash, test accuracy, training time, hardware, command).
Recipe: AdamW with a one-cycle learning rate (Smith & Topin, arXiv 1708.07120), batch 128, random
horizontal flips, seed 0. Test accuracy is measured once, at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffsampler.atomic import atomic_write_bytes
from diffsampler.data.datasets import fashion_mnist
from diffsampler.data.idx import fashion_mnist_file, read_idx
from diffsampler.device import cpu_model
from diffsampler.metrics.fmnist_net import (
    MANIFEST_FILE,
    NUM_FEATURES,
    WEIGHTS_FILE,
    WIDTHS,
    FMNISTNet,
    fold_batchnorm,
    uint8_to_input,
)


def load_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 1, 32, 32) and int64 labels (N,) of a Fashion-MNIST split."""
    images = torch.from_numpy(fashion_mnist(split).transpose(0, 3, 1, 2).copy())
    labels = torch.from_numpy(
        read_idx(fashion_mnist_file("train" if split == "train" else "t10k", "labels")).astype(np.int64)
    )
    return images, labels


def data_hash(images: torch.Tensor, labels: torch.Tensor) -> str:
    digest = hashlib.sha256(images.numpy().tobytes())
    digest.update(labels.numpy().tobytes())
    return digest.hexdigest()


def augment(x: torch.Tensor, gen: torch.Generator, shift: int) -> torch.Tensor:
    """Random shifts of up to ``shift`` pixels (filled with -1, the background) and random horizontal flips."""
    n = x.shape[0]
    padded = nn.functional.pad(x, (shift,) * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen), torch.randint(0, 2 * shift + 1, (n,), generator=gen)
    ar = torch.arange(32)
    rows, cols = dy[:, None] + ar, dx[:, None] + ar
    flip = torch.rand(n, generator=gen) < 0.5
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    out = padded[torch.arange(n)[:, None, None], 0, rows[:, :, None], cols[:, None, :]]
    return out[:, None].contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    net.eval()
    correct = sum(
        int((net(uint8_to_input(images[i : i + 1000])).argmax(1) == labels[i : i + 1000]).sum())
        for i in range(0, len(images), 1000)
    )
    return correct / len(images)


def train(args: argparse.Namespace) -> tuple[FMNISTNet, float, float]:
    """The trained network (with batch norm), the wall-clock and the CPU seconds of training."""
    images, labels = load_split("train")
    epochs, batch_size, lr = args.epochs, args.batch_size, args.lr
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    net = FMNISTNet(batchnorm=args.init is None, widths=args.widths, num_features=args.num_features)
    if args.init is not None:  # continue training a shipped (batch-norm-folded) network
        net.load_state_dict({k: v.float() for k, v in torch.load(args.init, weights_only=True).items()})
    net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    steps = epochs * (len(images) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    start, cpu_start = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(images), generator=gen)
        total = 0.0
        for k in range(len(images) // batch_size):
            idx = order[k * batch_size : (k + 1) * batch_size]
            x = augment(images[idx].float() / 127.5 - 1.0, gen, args.shift)
            loss = nn.functional.cross_entropy(net(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        print(
            f"epoch {epoch + 1}/{epochs}: loss {total / (k + 1):.4f}, {time.perf_counter() - start:.0f} s", flush=True
        )
    return net, time.perf_counter() - start, time.process_time() - cpu_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--widths", type=lambda s: tuple(int(v) for v in s.split(",")), default=WIDTHS)
    parser.add_argument("--num-features", type=int, default=NUM_FEATURES, help="width of the feature (fc) layer")
    parser.add_argument("--shift", type=int, default=0, help="random shifts of up to this many pixels (0: flips only)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", type=Path, default=None, help="start from these (folded, float16) weights")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--weights", type=Path, default=WEIGHTS_FILE)
    parser.add_argument("--manifest", type=Path, default=MANIFEST_FILE)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    trained, seconds, cpu_seconds = train(args)
    folded = fold_batchnorm(trained) if args.init is None else trained.eval()
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in folded.state_dict().items()}
    # the accuracy reported is that of the float16 weights as shipped
    shipped = FMNISTNet(batchnorm=False, widths=args.widths, num_features=args.num_features)
    shipped.load_state_dict({k: v.float() for k, v in state.items()})
    test_images, test_labels = load_split("test")
    train_images, train_labels = load_split("train")
    acc = accuracy(shipped, test_images, test_labels)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(args.weights, buffer.getvalue())
    c1, c2, c3 = args.widths
    manifest = {
        "sha256": hashlib.sha256(buffer.getvalue()).hexdigest(),
        "bytes": len(buffer.getvalue()),
        "architecture": (
            f"conv5x5/2(1->{c1}) conv3x3({c1}->{c2}) maxpool conv3x3({c2}->{c3}) maxpool "
            f"fc({c3 * 16}->{args.num_features}) relu fc({args.num_features}->10)"
        ),
        "features": f"fc output ({args.num_features}, before its ReLU)",
        "input": "uint8 / 127.5 - 1, 1x32x32 (28x28 padded by 2 with -1)",
        "train_data_sha256": data_hash(train_images, train_labels),
        "test_data_sha256": data_hash(test_images, test_labels),
        "test_accuracy": acc,
        "epochs": args.epochs,
        "init": None if args.init is None else str(args.init),
        "shift": args.shift,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "training_seconds": round(seconds, 1),
        "training_cpu_seconds": round(cpu_seconds, 1),
        "hardware": f"{cpu_model()}, torch {torch.__version__}, {args.threads} thread(s), CPU shared with other jobs",
        "command": "python " + " ".join(sys.argv),
    }
    atomic_write_bytes(args.manifest, (json.dumps(manifest, indent=2) + "\n").encode())
    print(f"test accuracy {acc:.4f} after {seconds:.0f} s -> {args.weights} ({len(buffer.getvalue())} bytes)")


if __name__ == "__main__":
    main()
