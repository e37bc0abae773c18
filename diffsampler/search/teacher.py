"""Teacher trajectories: iPNDM on a fine grid, with the state and dx/dsigma at every grid point.

GITS (arXiv 2405.11326) and LD3 (arXiv 2405.15506) both compare a few-step student with a
teacher solve of the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma from the same latents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from diffsampler.latents import standard_normal
from diffsampler.solvers.ipndm import ipndm

TEACHER_ORDER = 4
"""iPNDM order of the teacher (the GITS code's default teacher is iPNDM of order 4)."""


@dataclass(frozen=True)
class Trajectory:
    """Teacher states x_i at sigmas[i] (i = 0..M) and derivatives d_i = dx/dsigma at sigmas[i] (i = 0..M-1)."""

    sigmas: torch.Tensor
    states: torch.Tensor
    derivatives: torch.Tensor

    @property
    def final(self) -> torch.Tensor:
        return self.states[-1]


class _Recorder:
    """Wraps a denoiser and keeps (x, D(x, sigma)) of every call, so a solver run yields its trajectory."""

    def __init__(self, denoiser: Callable[..., torch.Tensor]) -> None:
        self.denoiser = denoiser
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, x: torch.Tensor, sigma: Any, cond: Any = None) -> torch.Tensor:
        out = self.denoiser(x, sigma, cond)
        self.calls.append((x, out))
        return out


def latents(
    shape: tuple[int, ...], num: int, seed: int, sigma_max: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """x_T = sigma_max z for samples 0..num-1 of ``seed`` (the same latents the sample command draws)."""
    return (standard_normal(range(num), shape, seed) * sigma_max).to(device, dtype)


def teacher_trajectory(
    denoiser: Callable[..., torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor, batch_size: int
) -> Trajectory:
    """iPNDM (order 4) from x along ``sigmas`` (ending above 0), recording every state and derivative."""
    grid = [float(s) for s in sigmas]
    states, derivs = [], []
    for start in range(0, x.shape[0], batch_size):
        rec = _Recorder(denoiser)
        with torch.no_grad():
            final = ipndm(rec, x[start : start + batch_size], grid, order=TEACHER_ORDER)
        xs = torch.stack([c[0] for c in rec.calls] + [final])
        ds = torch.stack([(c[0] - c[1]) / s for c, s in zip(rec.calls, grid)])
        states.append(xs)
        derivs.append(ds)
    return Trajectory(sigmas.to(torch.float64), torch.cat(states, dim=1), torch.cat(derivs, dim=1))
