"""The trajectory-error floor of a model: RMSE between two converged solvers from the same latents, per precision.

Heun at 80 NFE (EDM polynomial grid) and DPM-Solver++(3M) at 60 NFE (logSNR grid) both solve the probability-flow
ODE dx/dsigma = (x - D(x, sigma)) / sigma (EDM, arXiv 2206.00364 eq. 3) far below the errors of NFE 3-10, so their
disagreement is the smallest error an rmse column can resolve in that precision. Run in float32 and under bf16
autocast (the network in bf16, the solver state in float32), and optionally float64: the floor in each, the RMSE of
each solver between precisions, and the floor relative to the smallest error of a table must stay under 1/10.
Latents are the benchmark's (sample i of seed s is fixed). RMSE is over all samples and elements, as the rmse metric.

Usage:
    OMP_NUM_THREADS=1 python scripts/trajectory_floor.py --model PATH.pt [--num-samples 32] [--batch 32]
        [--precisions float32 bf16] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from diffsampler.latents import standard_normal
from diffsampler.metrics.reference import rmse
from diffsampler.models import Denoiser, load_model
from diffsampler.sampling import plan_grid
from diffsampler.solvers import get_solver

SOLVERS = (("heun", 80), ("dpmpp", 60))
"""(solver, NFE): Heun at 80 NFE and DPM-Solver++(3M) at 60 NFE, each on its default grid with default options."""
DTYPES = {"float64": torch.float64, "float32": torch.float32, "bf16": torch.float32}


def solve(model: Denoiser, latents: torch.Tensor, name: str, nfe: int, precision: str, batch: int) -> torch.Tensor:
    """The solver's samples from sigma_max * latents, in ``precision`` (bf16: autocast around float32 state)."""
    spec = get_solver(name)
    plan = plan_grid(spec, {}, model.sigma_min, model.sigma_max, nfe=nfe)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    model.to(torch.float64 if precision == "float64" else torch.float32)
    outs = []
    with torch.no_grad(), autocast:
        for start in range(0, latents.shape[0], batch):
            x = latents[start : start + batch].to(DTYPES[precision]) * plan.sigmas[0].item()
            outs.append(spec.sample(model, x, plan.sigmas).to(torch.float64))
    return torch.cat(outs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a registered model or an own U-Net checkpoint (.pt)")
    parser.add_argument("--num-samples", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precisions", nargs="+", choices=tuple(DTYPES), default=["float32", "bf16"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model).eval()
    latents = standard_normal(range(args.num_samples), tuple(model.sample_shape), args.seed)
    results: dict[tuple[str, str], torch.Tensor] = {}
    print(f"model {args.model}, {args.num_samples} samples, seed {args.seed}")
    first = args.precisions[0]
    for precision in args.precisions:
        for name, nfe in SOLVERS:
            tic = time.process_time()
            results[precision, name] = solve(model, latents, name, nfe, precision, args.batch)
            print(f"{precision:8s} {name:6s} NFE {nfe}: {time.process_time() - tic:7.1f} CPU s", flush=True)
        floor = rmse(results[precision, "heun"], results[precision, "dpmpp"])
        print(f"{precision:8s} floor RMSE(heun 80, dpmpp 3M 60) = {floor:.3e}", flush=True)
        if precision != first:
            for name, _ in SOLVERS:
                drift = rmse(results[precision, name], results[first, name])
                print(f"{precision:8s} {name} against {first}: RMSE {drift:.3e}", flush=True)


if __name__ == "__main__":
    main()
