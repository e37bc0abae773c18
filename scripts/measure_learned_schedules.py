"""Measure learned schedules on gmm-fmnist: rmse against the exact-ODE reference for iPNDM, DPM-Solver++ and UniPC
with the solver's default grid, GITS and LD3, at several NFE; one JSON line per cell to the output file.

    PYTHONPATH=. python scripts/measure_learned_schedules.py OUT.jsonl [num_eval] [ld3_samples] [ld3_iterations]
"""

from __future__ import annotations

import json
import sys
import time

import torch

from diffsampler.latents import standard_normal
from diffsampler.metrics.reference import reference_solution
from diffsampler.models import load_model
from diffsampler.schedules import get_sigmas
from diffsampler.search.run import SearchConfig, search_grid
from diffsampler.solvers import get_solver

out, num_eval = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 64
ld3_samples, ld3_iters = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (32, 25)
model = load_model("gmm-fmnist")
x = standard_normal(range(num_eval), model.sample_shape, 0) * model.sigma_max
ref = reference_solution(model, x, model.sigma_max, model.sigma_min).solution


def rmse(solver: str, grid: list[float]) -> float:
    y = get_solver(solver).sample(model, x, torch.tensor(grid), {})
    return float((y - ref).pow(2).mean().sqrt())


def emit(row: dict) -> None:
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")


for nfe in (3, 5, 6, 10):
    for metric in ("dev", "l2"):
        tic = time.perf_counter()
        art = search_grid(SearchConfig(method="gits", nfe=nfe, metric=metric, num_samples=256), model)
        secs = time.perf_counter() - tic
        for solver in ("ipndm", "dpmpp", "unipc"):
            emit(
                {
                    "nfe": nfe,
                    "solver": solver,
                    "schedule": f"gits-{metric}",
                    "rmse": rmse(solver, art.sigmas),
                    "seconds": secs,
                    "sigmas": art.sigmas,
                }
            )
    for solver in ("ipndm", "dpmpp", "unipc"):
        spec = get_solver(solver)
        default = get_sigmas(spec.default_schedule, nfe, model.sigma_min, model.sigma_max).tolist()
        emit(
            {
                "nfe": nfe,
                "solver": solver,
                "schedule": spec.default_schedule,
                "rmse": rmse(solver, default),
                "seconds": 0.0,
                "sigmas": default,
            }
        )
for nfe in (3, 5, 6, 10):
    for solver in ("ipndm", "dpmpp", "unipc"):
        tic = time.perf_counter()
        cfg = SearchConfig(method="ld3", solver=solver, nfe=nfe, num_samples=ld3_samples, iterations=ld3_iters, lr=0.02)
        art = search_grid(cfg, model)
        emit(
            {
                "nfe": nfe,
                "solver": solver,
                "schedule": "ld3",
                "rmse": rmse(solver, art.sigmas),
                "seconds": time.perf_counter() - tic,
                "sigmas": art.sigmas,
                "loss": [art.search["initial_loss"], art.search["final_loss"]],
            }
        )
