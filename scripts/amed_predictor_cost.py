"""Cost of one AMED predictor call against one network evaluation (NFE) on the same batch.

Usage: python scripts/amed_predictor_cost.py [--model gmm-fmnist] [--batch 128] [--device auto]
Prints the median wall time of each over repeated calls (synchronised on CUDA).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from diffsampler.amed.predictor import AMEDPredictor, PredictorConfig
from diffsampler.device import resolve_device
from diffsampler.models import load_model
from diffsampler.solvers.amed import pooled_state_features


def median_seconds(fn, device: torch.device, repeats: int = 30) -> float:
    """Median wall time of fn() after three warm-up calls."""
    times = []
    for i in range(repeats + 3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        tic = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - tic)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gmm-fmnist")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    model = load_model(args.model).to(device)
    x = torch.randn((args.batch, *model.sample_shape), device=device) * 10.0
    with torch.no_grad():
        model(x, 10.0)
        features = model.last_features if model.last_features is not None else pooled_state_features(x, 10.0)
        predictor = AMEDPredictor(PredictorConfig(feature_dim=features.shape[1], scale_dir=0.1, scale_time=0.1)).to(
            device
        )
        network = median_seconds(lambda: model(x, 10.0), device)
        step = median_seconds(
            lambda: predictor(
                10.0, 5.0, pooled_state_features(x, 10.0) if model.last_features is None else features, args.batch
            ),
            device,
        )
    print(
        f"{args.model} batch {args.batch} on {device}: one NFE {network * 1e3:.3f} ms, "
        f"predictor ({predictor.num_parameters} parameters, with its feature) {step * 1e3:.3f} ms per step "
        f"= {step / network:.1%} of an NFE"
    )


if __name__ == "__main__":
    main()
