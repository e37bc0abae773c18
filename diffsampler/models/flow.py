"""Flow-matching (rectified-flow) models in the EDM denoiser form.

A flow model predicts the velocity v(x_t, t) = E[eps - x0 | x_t] of x_t = (1 - t) x0 + t eps, t in [0, 1], t = 1
pure noise (rectified flow, arXiv 2209.03003; SD3, arXiv 2403.03206 sec. 2). With sigma = t / (1 - t) the EDM state
is x = x_t / (1 - t) = x0 + sigma eps, and D(x, sigma) = E[x0 | x] = x_t - t v(x_t, t); the network's input is
x_t = x / (1 + sigma). At sigma = inf (t = 1) the state is stored as x / sigma = x_t (``diffsampler.solvers.base``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from diffsampler.errors import UserError
from diffsampler.models.base import Denoiser
from diffsampler.schedules import FlowGrid


@dataclass(frozen=True)
class FlowTime:
    """The time a velocity network is given: ``scale`` * t (SD3: 1000, Flux: 1), or, ``reverse``d, ``scale`` * (1 - t)
    with the network returning dx/ds = x0 - eps = -v in s = 1 - t (facebookresearch/flow_matching, torchcfm: s = 1 is
    data)."""

    scale: float = 1.0
    reverse: bool = False

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise UserError(
                f"the flow time_scale must be positive (1, or 1000 for SD3-style networks), got {self.scale}"
            )


def training_range(grid: FlowGrid) -> tuple[float, float]:
    """(sigma_min, sigma_max) for schedules other than ``flow``: the EDM sigmas of the scheduler's smallest training
    time shift(1 / T) and of its largest below t = 1, shift((T - 1) / T) (sigma -> shift sigma in the EDM form)."""
    return grid.shift / (grid.train_steps - 1), grid.shift * (grid.train_steps - 1)


VelocityFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
"""(x_t, network time (B,), cond) -> the network's output (v, or -v for a reversed time)."""


def velocity_denoise(
    call: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigma: torch.Tensor,
    time: FlowTime,
    dtype: torch.dtype,
) -> torch.Tensor:
    """D(x, sigma) = x_t - t v(x_t, t) with t = sigma / (1 + sigma), x_t = x / (1 + sigma) (t = 1 and x_t = x at
    sigma = inf); ``call(x_t, network time)`` runs the network on x_t cast to ``dtype``."""
    infinite = torch.isinf(sigma)
    t = torch.where(infinite, torch.ones_like(sigma), sigma / (1 + sigma))
    shape = (-1, *([1] * (x.ndim - 1)))
    x_t = x * torch.where(infinite, torch.ones_like(sigma), 1 / (1 + sigma)).reshape(shape).to(x.dtype)
    network_time = (1 - t) if time.reverse else t
    time_dtype = torch.float64 if dtype == torch.float64 else torch.float32  # diffusers' timesteps are float32
    out = call(x_t.to(dtype), (time.scale * network_time).to(x.device, time_dtype))
    v = -out if time.reverse else out
    return (x_t - t.reshape(shape).to(x.dtype) * v.to(x.dtype)).to(x.dtype)


class FlowDenoiser(Denoiser):
    """EDM-form wrapper of a velocity network ``velocity(x_t, time, cond)``; subclasses may override ``velocity``.

    ``flow_grid`` holds the model's own grid settings (the ``flow`` schedule's shift); ``time`` what time the network
    is given. ``infinite_sigma`` marks that sigma = inf (t = 1) is accepted.
    """

    infinite_sigma = True

    def __init__(
        self,
        velocity: VelocityFn | None,
        sample_shape: tuple[int, ...],
        flow_grid: FlowGrid | None = None,
        time: FlowTime | None = None,
    ) -> None:
        super().__init__()
        self._velocity = velocity
        self.sample_shape = tuple(sample_shape)
        self.flow_grid = flow_grid or FlowGrid()
        self.time = time or FlowTime()
        self.sigma_min, self.sigma_max = training_range(self.flow_grid)

    def velocity(self, x_t: torch.Tensor, time: torch.Tensor, cond: Any) -> torch.Tensor:
        if self._velocity is None:
            raise NotImplementedError
        return self._velocity(x_t, time, cond)

    def network_dtype(self, x: torch.Tensor) -> torch.dtype:
        """The dtype the network's input is cast to (its parameters', else x's)."""
        first = next(self.parameters(), None)
        return x.dtype if first is None else first.dtype

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return velocity_denoise(
            lambda x_t, time: self.velocity(x_t, time, cond), x, sigma, self.time, self.network_dtype(x)
        )

    def describe(self) -> dict[str, Any]:
        grid = self.flow_grid
        return {
            **super().describe(),
            "prediction": "flow",
            "shift": grid.shift,
            "dynamic_shift": grid.dynamic,
            "time_scale": self.time.scale,
            **({"reverse_time": True} if self.time.reverse else {}),
        }
