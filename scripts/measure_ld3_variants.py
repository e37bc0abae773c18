"""LD3 on gmm-fmnist started from the solver's default grid and from the GITS grid (as LD3's code can), scored
as in measure_learned_schedules.py; GITS grids are read from that script's output.

    PYTHONPATH=. python scripts/measure_ld3_variants.py GITS.jsonl OUT.jsonl [num_eval] [ld3_samples] [ld3_iterations]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from diffsampler.latents import standard_normal
from diffsampler.metrics.reference import reference_solution
from diffsampler.models import load_model
from diffsampler.schedule_file import ScheduleArtefact, write_schedule
from diffsampler.search.run import SearchConfig, search_grid
from diffsampler.solvers import get_solver

gits_rows, out = [json.loads(line) for line in Path(sys.argv[1]).read_text().splitlines()], sys.argv[2]
num_eval = int(sys.argv[3]) if len(sys.argv) > 3 else 64
samples, iterations = (int(sys.argv[4]), int(sys.argv[5])) if len(sys.argv) > 5 else (32, 40)
model = load_model("gmm-fmnist")
x = standard_normal(range(num_eval), model.sample_shape, 0) * model.sigma_max
ref = reference_solution(model, x, model.sigma_max, model.sigma_min).solution
folder = Path(tempfile.mkdtemp())
for nfe in (3, 5, 6, 10):
    gits = next(r["sigmas"] for r in gits_rows if r["nfe"] == nfe and r["schedule"] == "gits-dev")
    init_file = str(write_schedule(folder / f"gits{nfe}.json", ScheduleArtefact(gits, "gits")))
    for solver in ("ipndm", "dpmpp", "unipc"):
        for init in (None, init_file):
            tic = time.perf_counter()
            cfg = SearchConfig(
                method="ld3", solver=solver, nfe=nfe, num_samples=samples, iterations=iterations, lr=0.02, init=init
            )
            art = search_grid(cfg, model)
            y = get_solver(solver).sample(model, x, torch.tensor(art.sigmas), {})
            row = {
                "nfe": nfe,
                "solver": solver,
                "schedule": "ld3" if init is None else "ld3-from-gits",
                "rmse": float((y - ref).pow(2).mean().sqrt()),
                "seconds": time.perf_counter() - tic,
                "sigmas": art.sigmas,
                "loss": [art.search["initial_loss"], art.search["final_loss"]],
            }
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")
