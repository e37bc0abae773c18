"""Error against a high-accuracy solution of the probability-flow ODE from the same latents.

The ODE is dx/dsigma = (x - D(x, sigma)) / sigma (EDM, arXiv 2206.00364 eq. 3). For a single
Gaussian N(mu, v I) it is linear and exact: x(s) = mu + (x_T - mu) sqrt((v + s^2) / (v + s_T^2)).
Otherwise the reference is classical RK4 on dx/dt = x - D(x, e^t) in t = log sigma, stepping between
the points of the EDM polynomial grid (rho = 7, arXiv 2206.00364 eq. 5). Its own error is checked by
halving: a sample's N-step solve is accepted when it agrees with its N/2-step solve to within a
tolerance (the N-step error is then well below that difference: 1/15 of it in the 4th-order regime),
and N doubles for the samples where it does not.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from diffsampler.atomic import atomic_write_bytes
from diffsampler.codehash import code_hash, package_modules
from diffsampler.errors import UNREADABLE_FILE, UserError
from diffsampler.latents import standard_normal
from diffsampler.models import Denoiser, GaussianMixture
from diffsampler.models.base import own_precision
from diffsampler.schedules import polynomial

log = logging.getLogger(__name__)

REFERENCE_STEPS = 32
"""RK4 steps of the first candidate (checked against half as many)."""
REFERENCE_TOL = 4.0 / 255.0
"""Largest accepted |x_N - x_{N/2}| per element: two 8-bit grey levels of images in [-1, 1]. The N-step error is
a fraction of it: on fmnist-p1 (4 latents) the accepted solves were at most 6.8e-4 from a 256-step one, a third
of the rmse between two converged solvers there; on gmm-2d and gmm-fmnist (64 latents) at most 0.38 and 0.23 of
their halving difference."""
MAX_REFERENCE_STEPS = 1024
METHOD = "rk4-log-sigma-polynomial/halving-per-sample-v2"


def single_gaussian(denoiser: Denoiser) -> tuple[torch.Tensor, float] | None:
    """(mean, variance) when the model is one isotropic Gaussian, else None."""
    if isinstance(denoiser, GaussianMixture) and denoiser.means.shape[0] == 1:
        return denoiser.means[0].reshape(denoiser.sample_shape), float(denoiser.variances[0])
    return None


def gaussian_flow(
    mean: torch.Tensor, variance: float, x_start: torch.Tensor, sigma_start: float, sigma_end: float
) -> torch.Tensor:
    """Exact ODE solution for N(mu, v I): mu + (x - mu) sqrt((v + s_end^2) / (v + s_start^2))."""
    mu = mean.to(x_start.device, torch.float64)
    return mu + (x_start.to(torch.float64) - mu) * math.sqrt((variance + sigma_end**2) / (variance + sigma_start**2))


def rk4_log_sigma(
    denoiser: Denoiser, x: torch.Tensor, sigma_start: float, sigma_end: float, steps: int
) -> torch.Tensor:
    """Classical RK4 on dx/dt = x - D(x, e^t), t = log sigma, between the points of the polynomial grid
    (4 NFE a step)."""
    ts = [math.log(s) for s in polynomial(steps, sigma_end, sigma_start).tolist()]
    x = x.to(torch.float64)

    def f(y: torch.Tensor, t: float) -> torch.Tensor:
        return y - denoiser(y, math.exp(t))

    with torch.no_grad():
        for t, t_next in zip(ts[:-1], ts[1:]):
            h = t_next - t
            k1 = f(x, t)
            k2 = f(x + 0.5 * h * k1, t + 0.5 * h)
            k3 = f(x + 0.5 * h * k2, t + 0.5 * h)
            k4 = f(x + h * k3, t_next)
            x = x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return x


@dataclass(frozen=True)
class Reference:
    """Reference solutions of a batch, each with the halving difference that bounds its error."""

    solution: torch.Tensor
    halving_difference: torch.Tensor
    steps: int
    """The most RK4 steps any sample needed (0 for the closed form)."""


def converged_rk4(
    denoiser: Denoiser,
    x_start: torch.Tensor,
    sigma_start: float,
    sigma_end: float,
    steps: int = REFERENCE_STEPS,
    tol: float = REFERENCE_TOL,
    max_steps: int = MAX_REFERENCE_STEPS,
) -> Reference:
    """RK4 with ``steps``, doubled per sample as needed, until max |x_N - x_{N/2}| of each sample is at most ``tol``.

    Samples are independent ODEs, so only the samples that have not converged are solved again.
    """
    coarse = rk4_log_sigma(denoiser, x_start, sigma_start, sigma_end, steps // 2)
    solution = torch.empty_like(coarse)
    difference = torch.empty(x_start.shape[0], dtype=torch.float64, device=coarse.device)
    todo = torch.arange(x_start.shape[0], device=coarse.device)
    while True:
        fine = rk4_log_sigma(denoiser, x_start[todo], sigma_start, sigma_end, steps)
        diff = (fine - coarse).abs().flatten(1).amax(dim=1)
        done = diff <= tol
        solution[todo[done]], difference[todo[done]] = fine[done], diff[done]
        if bool(done.all()):
            return Reference(solution, difference, steps)
        if steps * 2 > max_steps:
            raise UserError(
                f"the RK4 reference solution did not converge: {steps} and {steps // 2} steps differ by "
                f"{float(diff.max()):.3g} > {tol:.3g}; leave rmse and max_error out of the metrics for this model"
            )
        todo, coarse, steps = todo[~done], fine[~done], steps * 2


def reference_solution(denoiser: Denoiser, x_start: torch.Tensor, sigma_start: float, sigma_end: float) -> Reference:
    """The exact flow for a single Gaussian, otherwise the halving-checked RK4 solve."""
    gaussian = single_gaussian(denoiser)
    if gaussian is not None:
        exact = gaussian_flow(*gaussian, x_start, sigma_start, sigma_end)
        return Reference(exact, torch.zeros(x_start.shape[0], dtype=torch.float64), 0)
    return converged_rk4(denoiser, x_start, sigma_start, sigma_end)


def reference_code() -> str:
    """The hash of the code a reference solution depends on: this module, what it imports, and the model code."""
    return code_hash([__name__, *package_modules("diffsampler.models")])


@dataclass
class ReferenceCache:
    """Reference solutions for the latents (seed, index) of one model, extended on demand and kept on disk.

    Sample i starts from ``standard_normal([i], shape, seed) * sigma_start``, as in sampling.generate, so
    a larger sample count only solves the new indices.
    """

    denoiser: Denoiser
    seed: int
    sigma_start: float
    sigma_end: float
    device: torch.device
    batch_size: int
    folder: Path | None = None
    _solution: torch.Tensor | None = field(default=None, repr=False)
    _difference: torch.Tensor | None = field(default=None, repr=False)
    _steps: int = 0

    def key(self) -> str:
        desc = self.denoiser.describe()
        spec = {
            "model": desc["sha256"],
            "shape": desc["sample_shape"],
            "seed": self.seed,
            "sigma_start": self.sigma_start,
            "sigma_end": self.sigma_end,
            "method": METHOD,
            "steps": REFERENCE_STEPS,
            "tol": REFERENCE_TOL,
            "code": reference_code(),
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]

    @property
    def path(self) -> Path | None:
        return None if self.folder is None else self.folder / f"{self.key()}.npz"

    @property
    def available(self) -> int:
        return 0 if self._solution is None else self._solution.shape[0]

    def _load(self) -> None:
        if self._solution is not None or self.path is None or not self.path.is_file():
            return
        try:
            with np.load(self.path) as data:
                solution, difference, steps = data["solution"], data["halving_difference"], int(data["steps"])
            if solution.shape[1:] != tuple(self.denoiser.sample_shape) or difference.shape != solution.shape[:1]:
                raise ValueError(f"arrays of shapes {solution.shape} and {difference.shape}")
        except UNREADABLE_FILE as exc:
            log.warning("reference-solution cache %s is damaged (%s): solving again", self.path, exc)
            return
        self._solution, self._difference, self._steps = torch.from_numpy(solution), torch.from_numpy(difference), steps

    def _save(self) -> None:
        if self.path is None or self._solution is None or self._difference is None:
            return
        buf = io.BytesIO()
        np.savez(
            buf,
            solution=self._solution.numpy(),
            halving_difference=self._difference.numpy(),
            steps=np.int64(self._steps),
        )
        atomic_write_bytes(self.path, buf.getvalue())

    def get(self, count: int) -> Reference:
        """Reference solutions of samples 0 .. count-1 (solving and caching only the missing ones)."""
        self._load()
        have = self.available
        if have < count:
            self._solve(have, count)
        assert self._solution is not None and self._difference is not None
        return Reference(self._solution[:count], self._difference[:count], self._steps)

    def _solve(self, have: int, count: int) -> None:
        """Solve samples have .. count-1 with the network in its own precision (float32 even when the run lowers
        it: the reference stands for the exact ODE solution), append them and write the cache."""
        with own_precision(self.denoiser):
            parts, diffs = [], []
            for start in range(have, count, self.batch_size):
                batch = range(start, min(start + self.batch_size, count))
                x = (standard_normal(batch, self.denoiser.sample_shape, self.seed) * self.sigma_start).to(self.device)
                ref = reference_solution(self.denoiser, x, self.sigma_start, self.sigma_end)
                parts.append(ref.solution.cpu())
                diffs.append(ref.halving_difference.cpu())
                self._steps = max(self._steps, ref.steps)
            if self._solution is not None and self._difference is not None:
                parts, diffs = [self._solution, *parts], [self._difference, *diffs]
        self._solution, self._difference = torch.cat(parts), torch.cat(diffs)
        self._save()

    def describe(self, count: int) -> str:
        """One line saying how the reference was made and how accurate it is."""
        ref = self.get(count)
        if ref.steps == 0:
            return "reference: exact flow of the single Gaussian (closed form)"
        return (
            f"reference: RK4 in log sigma, up to {ref.steps} steps (4 NFE each), "
            f"max |x_N - x_N/2| = {float(ref.halving_difference.max()):.2e} (its own error is well below that)"
        )


def rmse(samples: torch.Tensor, reference: torch.Tensor) -> float:
    """Root mean square of x - x_ref over all samples and elements."""
    diff = samples.to(torch.float64) - reference.to(torch.float64)
    return float(diff.pow(2).mean().sqrt())


def max_error(samples: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest |x - x_ref| over all samples and elements."""
    return float((samples.to(torch.float64) - reference.to(torch.float64)).abs().max())
