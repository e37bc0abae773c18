"""Throughput of our solvers against k-diffusion's samplers on the same U-Net, and our overhead over the bare network.

Pairs: our ``euler`` against k-diffusion's ``sample_euler``, our ``dpmpp`` (order 2, midpoint, no lower-order final
step) against ``sample_dpmpp_2m``; both run the same network, latents, batch, precision and sigma grid (NFE + 1
polynomial sigmas from 80 to 0.002, NFE steps of 1 NFE each). "bare" is the NFE network calls D(x, sigma_i) alone,
with no solver arithmetic. Every round times each method once, in turn (after one warm-up round), so that load
changes hit all methods alike; reported are per-method medians of process CPU time and of wall time, samples/s from
the CPU time, and medians of the per-round ratios. With one thread (the default), process CPU time is the work done
and stays meaningful on a loaded machine; wall time is printed beside it. Since equal work still varies by a few
percent between rounds on a shared CPU, each solver is also timed with a zero-cost denoiser (it returns a fixed
tensor), which isolates the solver's own arithmetic; that time over the bare network's is the overhead bound.

Usage:
    OMP_NUM_THREADS=1 python scripts/bench_throughput.py [--model PATH.pt] [--batch 64] [--nfe 10] [--repeats 3]
        [--precision float32|bf16] [--threads 1]
The default model is a freshly built 32-channel U-Net of the fmnist-cpu family (1x32x32, P = 1).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import statistics
import sys
import time
import types
from collections.abc import Callable

import torch

from diffsampler.models import load_model
from diffsampler.models.base import Denoiser
from diffsampler.models.unet import UNetConfig, UNetDenoiser
from diffsampler.schedules import get_sigmas
from diffsampler.solvers import get_solver

Method = Callable[[], torch.Tensor]
SOLVER_ONLY_ROUNDS = 20


class ZeroCostDenoiser:
    """D(x, sigma) = a fixed tensor: timing a solver with it measures the solver's own arithmetic alone."""

    def __init__(self, like: torch.Tensor) -> None:
        self.out = torch.zeros_like(like)

    def __call__(self, x: torch.Tensor, sigma: object, cond: object = None) -> torch.Tensor:
        return self.out


def k_sampling() -> types.ModuleType:
    """k_diffusion.sampling without the package's __init__ (which imports its training extras)."""
    if "k_diffusion" not in sys.modules:
        spec = importlib.util.find_spec("k_diffusion")
        if spec is None:
            raise SystemExit("k-diffusion is not installed (pip install k-diffusion)")
        package = types.ModuleType("k_diffusion")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["k_diffusion"] = package
    return importlib.import_module("k_diffusion.sampling")


def build_model(path: str | None) -> Denoiser:
    """The checkpoint at ``path``, or a fresh 32-channel U-Net (random weights, same cost as a trained one)."""
    if path:
        return load_model(path)
    torch.manual_seed(0)
    cfg = UNetConfig(channels=32, channel_mult=[1, 2, 2], num_blocks=2, attention_resolutions=[8])
    return UNetDenoiser(cfg).eval()


def methods(model: Denoiser | ZeroCostDenoiser, x: torch.Tensor, nfe: int) -> dict[str, Method]:
    """Name -> a call that samples the batch x with NFE network evaluations."""
    sampling = k_sampling()
    sigmas = get_sigmas("polynomial", nfe, 0.002, 80.0)
    k_sigmas = sigmas.to(torch.float32)
    euler, dpmpp = get_solver("euler"), get_solver("dpmpp")
    two_m = {"order": 2, "variant": "midpoint", "lower_order_final": False}
    grid = sigmas.tolist()

    def bare() -> torch.Tensor:
        out = x
        for s in grid[:-1]:
            out = model(x, s)
        return out

    return {
        "bare network": bare,
        "euler (ours)": lambda: euler.sample(model, x, sigmas),
        "sample_euler (k-diffusion)": lambda: sampling.sample_euler(model, x, k_sigmas, disable=True),
        "dpmpp 2M (ours)": lambda: dpmpp.sample(model, x, sigmas, two_m),
        "sample_dpmpp_2m (k-diffusion)": lambda: sampling.sample_dpmpp_2m(model, x, k_sigmas, disable=True),
    }


def timed(fn: Method) -> tuple[float, float, torch.Tensor]:
    """(process CPU seconds, wall seconds, output) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, out


def run_rounds(calls: dict[str, Method], repeats: int, precision: str) -> tuple[dict, dict, dict]:
    """Per-method lists of CPU and wall times over ``repeats`` interleaved rounds, and each method's last output."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    wall: dict[str, list[float]] = {name: [] for name in calls}
    outputs: dict[str, torch.Tensor] = {}
    with torch.no_grad(), autocast:
        for name, fn in calls.items():  # warm-up round
            outputs[name] = fn()
        for _ in range(repeats):
            for name, fn in calls.items():
                c, w, outputs[name] = timed(fn)
                cpu[name].append(c)
                wall[name].append(w)
    return cpu, wall, outputs


def report(cpu: dict, wall: dict, outputs: dict, solver_only: dict, batch: int) -> None:
    med = {name: statistics.median(v) for name, v in cpu.items()}
    print(f"{'method':32s} {'CPU s':>8s} {'wall s':>8s} {'samples/s':>10s}")
    for name in cpu:
        print(f"{name:32s} {med[name]:8.3f} {statistics.median(wall[name]):8.3f} {batch / med[name]:10.1f}")
    pairs = [("euler (ours)", "sample_euler (k-diffusion)"), ("dpmpp 2M (ours)", "sample_dpmpp_2m (k-diffusion)")]
    for ours, theirs in pairs:
        ratio = statistics.median(t / o for o, t in zip(cpu[ours], cpu[theirs]))
        overhead = statistics.median(o / b - 1 for o, b in zip(cpu[ours], cpu["bare network"]))
        k_overhead = statistics.median(t / b - 1 for t, b in zip(cpu[theirs], cpu["bare network"]))
        diff = (outputs[ours].float() - outputs[theirs].float()).abs().max().item()
        print(
            f"{ours}: throughput ratio to k-diffusion {ratio:.3f} (>1 = ours faster); overhead over the bare network "
            f"ours {100 * overhead:+.2f}%, k-diffusion {100 * k_overhead:+.2f}%; max |ours - theirs| {diff:.2e}"
        )
        bare = med["bare network"]
        print(
            f"  solver arithmetic alone (zero-cost denoiser, min of {SOLVER_ONLY_ROUNDS}): ours "
            f"{1e3 * solver_only[ours]:.2f} ms = {100 * solver_only[ours] / bare:.3f}% of the bare network, "
            f"k-diffusion {1e3 * solver_only[theirs]:.2f} ms = {100 * solver_only[theirs] / bare:.3f}%"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="own U-Net checkpoint (.pt); default a fresh 32-channel U-Net")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--nfe", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", choices=("float32", "bf16"), default="float32")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model(args.model)
    x = torch.randn((args.batch, *model.sample_shape), generator=torch.Generator().manual_seed(0)) * 80.0
    print(
        f"batch {args.batch}, NFE {args.nfe}, {args.precision}, {args.threads} thread(s), {args.repeats} rounds, "
        f"model {args.model or 'fresh 32-channel U-Net'}"
    )
    cpu, wall, outputs = run_rounds(methods(model, x, args.nfe), args.repeats, args.precision)
    zero_cpu, _, _ = run_rounds(methods(ZeroCostDenoiser(x), x, args.nfe), SOLVER_ONLY_ROUNDS, args.precision)
    report(cpu, wall, outputs, {name: min(v) for name, v in zero_cpu.items()}, args.batch)


if __name__ == "__main__":
    main()
