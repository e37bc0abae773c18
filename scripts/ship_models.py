"""Copy trained runs into the package as built-in models and write their manifest.

    python scripts/ship_models.py fmnist-p1=results/train/fmnist-cpu-p1 fmnist-p2=... [--description TEXT]

Each NAME=RUN_FOLDER takes RUN_FOLDER/model.pt (the EMA checkpoint `train-model` writes, float16) and
RUN_FOLDER/loss.csv, copies the checkpoint to diffsampler/models/trained/NAME.pt and records in
diffsampler/models/trained/manifest.json: the file's sha256, the U-Net config, parameters, training
config, data hash, steps, images seen, wall and CPU training time (totals over warm starts, `init_from`),
hardware, precision and final loss.
Entries of models not named on the command line are kept.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import yaml

from diffsampler.atomic import atomic_write_bytes
from diffsampler.config import flat_dict, load_config
from diffsampler.digest import file_sha256
from diffsampler.models.checkpoint import read_checkpoint
from diffsampler.models.shipped import MANIFEST_FORMAT, MANIFEST_NAME, read_manifest, trained_dir
from diffsampler.train.config import TrainConfig

DESCRIPTION = "Fashion-MNIST 32x32 EDM U-Net trained on a 2-core CPU (preview)"


def final_loss(loss_csv: Path) -> float:
    """The mean training loss of the last logged window."""
    with loss_csv.open() as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["loss"])


def entry(name: str, run: Path, target: Path, description: str = DESCRIPTION) -> dict:
    payload = read_checkpoint(run / "model.pt")
    meta = payload["meta"]
    params = sum(t.numel() for t in payload["state_dict"].values())
    shutil.copyfile(run / "model.pt", target)
    keys = ("step", "data_source", "data_sha256", "hardware", "precision", "created", "train_config", "prior")
    prior = meta.get("prior") or {}
    totals = {k: meta[k] + prior.get(k, 0) for k in ("images_seen", "training_seconds", "cpu_seconds")}
    return {
        "file": target.name,
        "sha256": file_sha256(target),
        "weights_sha256": payload["weights_sha256"],
        "description": description,
        "unet": payload["unet"],
        "parameters": params,
        "storage_dtype": str(next(iter(payload["state_dict"].values())).dtype).removeprefix("torch."),
        "final_loss": final_loss(run / "loss.csv"),
        **totals,
        **{k: meta.get(k) for k in keys},
        "command": training_command(meta["train_config"]),
    }


def training_command(recorded: dict) -> str:
    """The train-model command that made a run: its config file, and --set for every key the run had otherwise
    (a run started with overrides, such as a time limit, is not what the file alone reproduces)."""
    path = f"configs/train/{recorded['name']}.yaml"
    command = f"diffsampler train-model --config {path}"
    if not Path(path).is_file():
        return command
    from_file = flat_dict(load_config(TrainConfig, path))
    sets = [
        f"--set {key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
        for key, value in recorded.items()
        if key in from_file and from_file[key] != value
    ]
    return " ".join([command, *sets])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="NAME=RUN_FOLDER pairs")
    parser.add_argument("--description", default=DESCRIPTION, help="the one line `diffsampler list` shows")
    args = parser.parse_args()
    folder = trained_dir()
    folder.mkdir(parents=True, exist_ok=True)
    models = read_manifest(folder)
    for pair in args.runs:
        name, _, run = pair.partition("=")
        models[name] = entry(name, Path(run), folder / f"{name}.pt", args.description)
        print(
            f"{name}: step {models[name]['step']}, {models[name]['images_seen']} images, "
            f"sha256 {models[name]['sha256'][:12]}"
        )
    manifest = {"format": MANIFEST_FORMAT, "models": dict(sorted(models.items()))}
    atomic_write_bytes(folder / MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode())


if __name__ == "__main__":
    main()
