"""Full 2048-d check: `diffsampler fid`'s numbers against clean-fid's own compute_fid on the same image folders.

    PYTHONPATH=$PWD python scripts/check_fid_cleanfid.py --num-images 16

Writes two folders of real Fashion-MNIST images (the ones shipped with the package: the first N and the
next N), computes FID with clean-fid's default "clean" pipeline (its resize, its InceptionV3W, its
Frechet distance) and with diffsampler, and prints both and their relative difference. The CPU runs
the network at a few images/s, so keep N small; the issue's bound is 1e-4 relative.
"""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import typer
from PIL import Image
from rich.console import Console

from diffsampler.data.datasets import load_images
from diffsampler.metrics.fid import feature_statistics, fid_from_statistics
from diffsampler.metrics.inception import CLEANFID_FILE, locate_inception


def main(
    num_images: int = typer.Option(16, help="Images per set."),
    inception: Optional[Path] = typer.Option(None, help="FID Inception weights; default lookup otherwise."),
) -> None:
    from cleanfid import fid as cleanfid
    from cleanfid.inception_torchscript import InceptionV3W

    weights = locate_inception(inception)
    with resources.files("diffsampler.models").joinpath("data/fmnist_means.npz").open("rb") as f:
        images = np.load(f)["images"][: 2 * num_images]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, batch in (("a", images[:num_images]), ("b", images[num_images:])):
            (root / name).mkdir()
            for i, img in enumerate(batch):
                Image.fromarray(img[..., 0] if img.ndim == 3 else img).save(root / name / f"{i}.png")
        module = torch.jit.load(str(weights.path))
        torch.jit.save(getattr(module, "net", module), str(root / CLEANFID_FILE))
        model = InceptionV3W(str(root), download=True).eval()  # what clean-fid's build_feature_extractor makes
        theirs = cleanfid.compute_fid(
            str(root / "a"),
            str(root / "b"),
            mode="clean",
            num_workers=0,
            batch_size=num_images,
            device=torch.device("cpu"),
            custom_feat_extractor=model,
            verbose=False,
            use_dataparallel=False,
        )
        net = weights.load("cpu")
        stats = [feature_statistics(net, load_images(root / name), num_images) for name in ("a", "b")]
    ours = fid_from_statistics(*stats)
    Console().print(
        f"clean-fid {theirs:.6f}  diffsampler {ours:.6f}  relative difference {abs(ours - theirs) / abs(theirs):.2e}"
    )


if __name__ == "__main__":
    typer.run(main)
