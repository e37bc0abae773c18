"""Accuracy of the rmse reference solution against its cost: RK4 in log sigma with N steps against a much finer one.

The rmse metric's reference (``diffsampler.metrics.reference``) is classical RK4 on dx/dt = x - D(x, e^t),
t = log sigma, between the points of the EDM polynomial grid (arXiv 2206.00364 eq. 5), 4 NFE a step. This script
solves the benchmark's latents (sample i of seed s) with each N of ``--steps`` and with ``--finest`` steps, and
prints, per N, the NFE per latent, the RMSE and the largest element error against the finest solve, and the largest
per-latent halving difference max|x_N - x_N/2| the reference accepts by. An N whose RMSE is far under the model's
floor (two converged solvers against each other, scripts/trajectory_floor.py) is accurate enough for rmse.

Usage:
    python scripts/reference_accuracy.py [--model fmnist-p1] [--num-samples 8] [--steps 8 12 16 24 32] [--finest 96]
"""

from __future__ import annotations

import argparse
import time

from diffsampler.latents import standard_normal
from diffsampler.metrics.reference import rk4_log_sigma
from diffsampler.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fmnist-p1")
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 12, 16, 24, 32])
    parser.add_argument("--finest", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = load_model(args.model)
    x = standard_normal(range(args.num_samples), model.sample_shape, args.seed) * model.sigma_max
    solutions = {}
    for steps in sorted({*args.steps, *(s // 2 for s in args.steps), args.finest}):
        tic = time.perf_counter()
        solutions[steps] = rk4_log_sigma(model, x, model.sigma_max, model.sigma_min, steps)
        print(f"solved {steps} steps in {time.perf_counter() - tic:.1f} s", flush=True)
    best = solutions[args.finest]
    print(f"{args.num_samples} latents of {args.model}, seed {args.seed}, against RK4 with {args.finest} steps")
    print("steps  NFE/latent  rmse       max|err|   max halving difference")
    for steps in args.steps:
        err = solutions[steps] - best
        halving = (solutions[steps] - solutions[steps // 2]).abs().flatten(1).amax(dim=1).max()
        print(
            f"{steps:5d}  {4 * steps:10d}  {float(err.pow(2).mean().sqrt()):.3e}  "
            f"{float(err.abs().max()):.3e}  {float(halving):.3e}"
        )


if __name__ == "__main__":
    main()
