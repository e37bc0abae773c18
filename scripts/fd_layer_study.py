"""Why fd_fmnist and Inception FID disagree: the same cells scored in other layers of the classifier and in pixels.

Issue 17 asks, when the rank agreement with FID is under 0.9, which feature layer or width would see what
Inception sees. This script takes the cells of an ``fd_vs_fid.py`` run (their FID values from agreement.json),
regenerates each cell's samples with ``diffsampler sample`` (same model, seed, batch size and precision, so the
same latents; the regenerated fc-layer distance is printed beside the recorded one as a check), and scores them
in several feature spaces of the shipped classifier against the 60k training images:

- ``fc``: the shipped fd_fmnist (128 features before the ReLU);
- ``conv1`` / ``conv2`` / ``conv3``: channel means and standard deviations of each convolution's map (after ReLU),
  i.e. texture statistics at three scales (48, 96, 192 features);
- ``conv3-map``: the pooled conv3 map flattened (the fc layer's input, 1,536 features);
- ``logits``: the 10 class logits;
- ``pixels-8``: the image average-pooled to 8x8 (64 features; shape and brightness, no classifier);
- ``stats``: four image statistics (mean, background fraction, saturated fraction, high-frequency energy).

Beside the spaces, each cell's sharpness and black-background fraction against the training images', and how FID and
fd_fmnist rank the cells by them.

For each space: Spearman's rho against FID over the cells. Writes OUT/layers.json and OUT/layers.md.

    python scripts/fd_layer_study.py --run results/fd-vs-fid-p1 --samples /work/samples/fd-study
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from scipy.stats import spearmanr

from diffsampler.data.datasets import fashion_mnist
from diffsampler.metrics.fid import model_range_to_uint8
from diffsampler.metrics.fmnist_net import WEIGHTS_FILE, FMNISTNet, load_net, uint8_to_input
from diffsampler.metrics.frechet import frechet_distance, mean_and_covariance

Space = Callable[[FMNISTNet, torch.Tensor, list[torch.Tensor]], torch.Tensor]
"""(network, input in [-1, 1], its three convolution maps) -> features."""


def _maps(net: FMNISTNet, x: torch.Tensor) -> list[torch.Tensor]:
    """The classifier's conv1, conv2 and pooled conv3 maps after their ReLUs (as in ``FMNISTNet.features``)."""
    relu, pool = torch.nn.functional.relu, torch.nn.functional.max_pool2d
    a = relu(net.conv1(x))
    b = relu(net.conv2(a))
    c = relu(net.conv3(pool(b, 2)))
    return [a, b, pool(c, 2)]


def _moments(m: torch.Tensor) -> torch.Tensor:
    return torch.cat([m.mean(dim=(2, 3)), m.std(dim=(2, 3))], dim=1)


def _laplacian(x: torch.Tensor) -> torch.Tensor:
    """The 5-point Laplacian of (N, C, H, W) images on their interior pixels."""
    return 4 * x[..., 1:-1, 1:-1] - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:]


def _image_stats(net: FMNISTNet, x: torch.Tensor, maps: list[torch.Tensor]) -> torch.Tensor:
    """Mean level, fraction of background (< -0.9), fraction saturated (> 0.9), mean squared Laplacian."""
    cols = [x.mean(dim=(1, 2, 3)), (x < -0.9).float().mean(dim=(1, 2, 3)), (x > 0.9).float().mean(dim=(1, 2, 3))]
    return torch.stack([*cols, _laplacian(x).square().mean(dim=(1, 2, 3))], dim=1)


SPACES: dict[str, Space] = {
    "fc": lambda net, x, maps: net.features(x),
    "conv1": lambda net, x, maps: _moments(maps[0]),
    "conv2": lambda net, x, maps: _moments(maps[1]),
    "conv3": lambda net, x, maps: _moments(maps[2]),
    "conv3-map": lambda net, x, maps: maps[2].flatten(1),
    "logits": lambda net, x, maps: net(x),
    "pixels-8": lambda net, x, maps: torch.nn.functional.avg_pool2d(x, 4).flatten(1),
    "stats": _image_stats,
}


@torch.no_grad()
def features(net: FMNISTNet, images: torch.Tensor) -> dict[str, np.ndarray]:
    """uint8 (N, 1, 32, 32) -> every space's features (float64)."""
    out: dict[str, list[np.ndarray]] = {name: [] for name in SPACES}
    for chunk in images.split(1000):
        x = uint8_to_input(chunk)
        maps = _maps(net, x)
        for name, space in SPACES.items():
            out[name].append(space(net, x, maps).double().numpy())
    return {name: np.concatenate(parts) for name, parts in out.items()}


def cell_images(run: dict, solver: str, nfe: int, samples: Path) -> torch.Tensor:
    """The cell's samples as uint8, generated once with `diffsampler sample` (same seed and latents)."""
    folder = samples / f"{solver}-nfe{nfe:03d}"
    if not (folder / "samples.npz").is_file():
        cmd = [sys.executable, "-m", "diffsampler", "sample", "--model", run["model"], "--solver", solver]
        cmd += ["--nfe", str(nfe), "--num-samples", str(run["num_samples"]), "--batch-size", str(run["batch_size"])]
        cmd += ["--seed", str(run["seed"]), "--set", f"precision={run['precision']}", "--out", str(samples)]
        subprocess.run([*cmd, "--name", folder.name], check=True)
    with np.load(folder / "samples.npz") as data:
        return model_range_to_uint8(torch.from_numpy(data["samples"]))


def sharpness_and_background(images: torch.Tensor) -> tuple[float, float]:
    """RMS of the 5-point Laplacian (grey levels; blur lowers it) and the fraction of pixels darker than 8 (haze in
    the black background lowers it) of uint8 images (N, 1, H, W)."""
    x = images.double()
    return float(_laplacian(x).square().mean().sqrt()), float((x < 8).double().mean())


def score_cells(args: argparse.Namespace, rows: list[dict]) -> tuple[dict[str, list[float]], list[tuple[float, float]]]:
    """Every space's Frechet distance of each cell to the training images, and each cell's image statistics."""
    run = yaml.safe_load((args.run.parent / f"{args.run.name}.yaml").read_text())
    net = load_net(args.weights)
    train = torch.from_numpy(fashion_mnist("train")).permute(0, 3, 1, 2)
    reference = {name: mean_and_covariance(f) for name, f in features(net, train).items()}
    scores: dict[str, list[float]] = {name: [] for name in SPACES}
    looks = [sharpness_and_background(train)]
    for row in rows:
        images = cell_images(run, row["solver"], row["nfe"], args.samples)
        cell = features(net, images)
        for name in SPACES:
            scores[name].append(frechet_distance(*mean_and_covariance(cell[name]), *reference[name]))
        looks.append(sharpness_and_background(images))
        print(
            f"{row['solver']} NFE {row['nfe']}: fc {scores['fc'][-1]:.2f} (fd_fmnist recorded {row['fd_fmnist']:.2f})"
        )
    return scores, looks


def report(rows: list[dict], scores: dict[str, list[float]], looks: list[tuple[float, float]]) -> tuple[dict, str]:
    """Spearman's rho of every space against FID, and of FID and fd_fmnist against the loss of sharpness and of
    black background relative to the training images."""
    fid, fd = [row["fid"] for row in rows], [row["fd_fmnist"] for row in rows]
    rho = {name: float(spearmanr(fid, values).statistic) for name, values in scores.items()}
    (sharp0, black0), cells = looks[0], looks[1:]
    blur, haze = [abs(sharp0 - s) for s, _ in cells], [black0 - b for _, b in cells]
    rho_looks = {
        f"{metric} vs {what}": float(spearmanr(values, deficit).statistic)
        for metric, values in (("FID", fid), ("fd_fmnist", fd))
        for what, deficit in (("sharpness gap to training", blur), ("black-background deficit", haze))
    }
    lines = ["| space | Spearman rho vs FID |", "|---|---:|", *(f"| {k} | {v:.3f} |" for k, v in rho.items())]
    lines += ["", f"Training images: sharpness {sharp0:.1f}, black fraction {black0:.3f}.", ""]
    lines += ["| solver | NFE | FID | fd_fmnist | sharpness | black fraction |", "|---|---:|---:|---:|---:|---:|"]
    lines += [
        f"| {r['solver']} | {r['nfe']} | {r['fid']:.2f} | {r['fd_fmnist']:.1f} | {s:.1f} | {b:.3f} |"
        for r, (s, b) in zip(rows, cells)
    ]
    lines += ["", "| Spearman rho | value |", "|---|---:|", *(f"| {k} | {v:.3f} |" for k, v in rho_looks.items())]
    result = {"spearman_vs_fid": rho, "spearman_looks": rho_looks, "looks": looks}
    return result, "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("results/fd-vs-fid-p1"))
    parser.add_argument("--samples", type=Path, required=True, help="folder for the regenerated samples (large)")
    parser.add_argument("--weights", type=Path, default=WEIGHTS_FILE, help="another classifier's weights")
    parser.add_argument("--tag", default="", help="suffix of the output files (layers<TAG>.json / .md)")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = json.loads((args.run / "agreement.json").read_text())["rows"]
    scores, looks = score_cells(args, rows)
    result, text = report(rows, scores, looks)
    result.update(run=str(args.run), weights=str(args.weights), cells=rows, scores=scores)
    (args.run / f"layers{args.tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.run / f"layers{args.tag}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
