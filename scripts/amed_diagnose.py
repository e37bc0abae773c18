"""Where an AMED predictor's error comes from: its teacher, its learned intermediate points, or the student's grid.

    OMP_NUM_THREADS=1 python scripts/amed_diagnose.py results/amed/fmnist-p1-ipndm-nfe5.pt --num-samples 16

For the predictor's model, grid and student (read from the checkpoint) and the latents of samples 0..N-1 (seed 0,
as every benchmark draws them), prints the RMSE against the RK4 reference solution (metrics/reference.py) of:
the teacher it was distilled from (the same one-step solver on the (M + 1)-fold refined grid, as train-amed runs
it), the student steered by the trained predictor (with the mean r, c and a it chose per interval), and the student
with a fixed r on every interval and no scaling (c = a = 1), for a sweep of r. AMED (arXiv 2312.00094) trains r,
c, a per interval against the teacher; if a fixed r beats the trained predictor, training is what falls short; if
the best fixed r is still worse than the base solver at the same NFE, the student's coarser grid is the limit.
"""

from __future__ import annotations

import argparse

import torch

from diffsampler.amed.checkpoint import load_predictor
from diffsampler.latents import standard_normal
from diffsampler.metrics.reference import converged_rk4, rmse
from diffsampler.models import load_model
from diffsampler.schedules import get_sigmas
from diffsampler.solvers import get_solver
from diffsampler.solvers.amed import AmedParams, amed_plugin, amed_solver

FIXED_R = (0.2, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8)


def student_run(meta: dict, predictor, denoiser, z: torch.Tensor) -> torch.Tensor:
    """The checkpoint's student on its own grid, steered by ``predictor``."""
    if meta["solver"] == "amed":
        return amed_solver(denoiser, z, meta["sigmas"], afs=meta["afs"], predictor=predictor)
    return amed_plugin(
        denoiser,
        z,
        meta["sigmas"],
        afs=meta["afs"],
        predictor=predictor,
        base=meta["base"],
        max_order=meta["max_order"],
        lower_order_final=meta["lower_order_final"],
    )


def teacher_run(meta: dict, denoiser, z: torch.Tensor) -> torch.Tensor:
    """The teacher of train-amed: its one-step solver on the student's schedule refined (M + 1)-fold."""
    steps = (meta["teacher_m"] + 1) * (len(meta["sigmas"]) - 1)
    fine = get_sigmas(meta["schedule"], steps, meta["sigma_min"], meta["sigma_max"], meta["rho"])
    return get_solver(meta["teacher"]).sample(denoiser, z, fine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("predictor", help="an AMED predictor checkpoint written by train-amed")
    parser.add_argument("--num-samples", type=int, default=16)
    args = parser.parse_args()
    checkpoint = load_predictor(args.predictor)
    meta = checkpoint.meta
    denoiser = load_model(meta["model_name"])
    z = standard_normal(range(args.num_samples), tuple(denoiser.sample_shape), 0).float() * meta["sigma_max"]
    chosen: list[tuple[float, float, float]] = []

    def trained(t: float, t_next: float, feature, batch: int) -> AmedParams:
        params = checkpoint.predictor(t, t_next, feature, batch)
        chosen.append((params.r.mean().item(), params.c.mean().item(), params.a.mean().item()))
        return params

    with torch.no_grad():
        ref = converged_rk4(denoiser, z, meta["sigma_max"], meta["sigma_min"]).solution
        print(f"grid {[round(s, 4) for s in meta['sigmas']]}, student {meta['solver']}, afs {meta['afs']}")
        teacher_error = rmse(teacher_run(meta, denoiser, z), ref)
        print(f"teacher {meta['teacher']} x{meta['teacher_nfe']} NFE: rmse {teacher_error:.4f}")
        print(f"trained predictor: rmse {rmse(student_run(meta, trained, denoiser, z), ref):.4f}")
        print("  per interval (mean r, c, a): " + ", ".join(f"({r:.3f}, {c:.3f}, {a:.3f})" for r, c, a in chosen))
        for r in FIXED_R:

            def fixed(t: float, t_next: float, feature, batch: int, r: float = r) -> AmedParams:
                return AmedParams(torch.full((batch,), r), torch.ones(batch), torch.ones(batch))

            print(f"fixed r {r:.2f}, c = a = 1: rmse {rmse(student_run(meta, fixed, denoiser, z), ref):.4f}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
