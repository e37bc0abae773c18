"""Sigma grids: descending float64 tensors sigma_max = s_0 > ... > s_N = sigma_min.

Each schedule maps (num_steps, sigma_min, sigma_max, rho) to N + 1 = num_steps + 1 sigmas,
with the formulas of zju-pi/diff-sampler (diff-solvers-main/solver_utils.py::get_schedule; EDM arXiv
2206.00364 eq. 5 for ``polynomial``, DPM-Solver arXiv 2206.00927 section 3.3 for ``logsnr`` and ``time_uniform``).
``discrete`` also needs the model's table of training sigmas (``Denoiser.discrete_sigmas``); ``flow`` (the grid of
diffusers' FlowMatchEulerDiscreteScheduler) the flow model's ``FlowGrid`` and starts at sigma = inf (t = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from diffsampler.errors import UserError, shorten, unknown_choice
from diffsampler.plugins import load_group

VP_EPS_S = 1e-3
"""Final VP time of the fitted VP-linear SDE (t runs from 1 down to this)."""


def polynomial(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """EDM eq. 5: s_i = (s_max^(1/rho) + i/N (s_min^(1/rho) - s_max^(1/rho)))^rho."""
    ramp = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def logsnr(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    """Uniform in lambda = -log(sigma): s_i = exp(log s_max + i/N (log s_min - log s_max))."""
    ramp = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
    return torch.exp(math.log(sigma_max) + ramp * (math.log(sigma_min) - math.log(sigma_max)))


def vp_linear_fit(sigma_min: float, sigma_max: float, eps_s: float = VP_EPS_S) -> tuple[float, float]:
    """(beta_d, beta_min) of the VP-linear SDE with sigma(1) = sigma_max and sigma(eps_s) = sigma_min.

    sigma(t)^2 = exp(beta_d t^2 / 2 + beta_min t) - 1 (EDM appendix B.2).
    """
    a, b = math.log(sigma_min**2 + 1), math.log(sigma_max**2 + 1)
    beta_d = 2 * (a / eps_s - b) / (eps_s - 1)
    return beta_d, b - beta_d / 2


def time_uniform(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    """Uniform in VP time t^(1/rho) of the fitted VP-linear SDE: t_i = (1 + i/N (eps_s^(1/rho) - 1))^rho.

    rho = 1 is "time-uniform" (DPM-Solver), rho = 2 "time-quadratic" (DEIS, arXiv 2204.13902).
    """
    beta_d, beta_min = vp_linear_fit(sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
    t = (1 + ramp * (VP_EPS_S ** (1 / rho) - 1)) ** rho
    sig = torch.sqrt(torch.expm1(0.5 * beta_d * t**2 + beta_min * t))
    sig[0], sig[-1] = sigma_max, sigma_min
    return sig


def timestep_of_sigma(table: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Fractional training timestep of each sigma: linear in log sigma between neighbouring entries.

    ``table[k]`` is the (ascending) sigma of training timestep k; sigmas outside the table clamp
    to its ends. Exact at the table's entries, so sigma = table[k] gives t = k.
    """
    log_table = table.log()
    log_sigma = sigma.to(table).log().reshape(-1)
    low = torch.searchsorted(log_table, log_sigma, right=True).sub(1).clamp(0, table.numel() - 2)
    lo, hi = log_table[low], log_table[low + 1]
    w = ((log_sigma - lo) / (hi - lo)).clamp(0, 1)
    return (low + w).reshape(sigma.shape)


def sigma_of_timestep(table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Inverse of ``timestep_of_sigma``: sigma at a fractional timestep, log-linear between entries."""
    t = t.to(table).clamp(0, table.numel() - 1)
    low = t.floor().long().clamp(max=table.numel() - 2)
    w = t - low
    log_table = table.log()
    return torch.exp((1 - w) * log_table[low] + w * log_table[low + 1])


def discrete(num_steps: int, sigma_min: float, sigma_max: float, rho: float, table: torch.Tensor) -> torch.Tensor:
    """The model's own training timesteps: k_i = round((k_max^(1/rho) + i/N (k_min^(1/rho) - k_max^(1/rho)))^rho).

    k_max, k_min are the (fractional) timesteps of sigma_max and sigma_min; rho = 1 is uniform in the
    timestep (999, 899, ..., 0 on a 1000-step model). Unlike zju-pi/diff-sampler's get_schedule, k_max is raised to
    1/rho too, so rho != 1 keeps both end points. The grid is sigma_i = table[k_i].
    """
    ends = timestep_of_sigma(table, torch.tensor([sigma_max, sigma_min], dtype=torch.float64))
    k_max, k_min = float(ends[0]), float(ends[1])
    ramp = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
    steps = (k_max ** (1 / rho) + ramp * (k_min ** (1 / rho) - k_max ** (1 / rho))) ** rho
    index = steps.round().long()
    if (index[1:] >= index[:-1]).any():
        available = int(index[0] - index[-1]) + 1
        raise UserError(
            f"the discrete schedule has only {available} training timesteps between sigma_max and sigma_min, "
            f"too few for {num_steps} distinct steps; use fewer steps or another schedule"
        )
    return table[index]


AYS_SIGMAS: dict[str, tuple[float, ...]] = {
    "sd15": (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029),
    "sdxl": (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029),
}
"""Align Your Steps (arXiv 2404.14507) 10-step sigmas for Stable Diffusion 1.5 and SDXL, as published on the
authors' page https://research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html (the page appends a final 0)."""


def _ays(table: tuple[float, ...], num_steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """AYS's log-linear interpolation (log sigma piecewise linear in the position i / N along the published list),
    then log sigma mapped affinely from the list's ends onto [sigma_min, sigma_max] (the identity for Stable
    Diffusion's own range, sigma_min = 0.029 and sigma_max = 14.615)."""
    known = torch.log(torch.tensor(table, dtype=torch.float64))
    pos = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64) * (len(table) - 1)
    low = pos.floor().long().clamp(max=len(table) - 2)
    w = pos - low
    logs = (1 - w) * known[low] + w * known[low + 1]
    scale = (math.log(sigma_max) - math.log(sigma_min)) / float(known[0] - known[-1])
    return torch.exp(math.log(sigma_min) + (logs - known[-1]) * scale)


def ays_sd15(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    """The published SD 1.5 AYS grid, interpolated to ``num_steps`` and mapped onto [sigma_min, sigma_max]."""
    return _ays(AYS_SIGMAS["sd15"], num_steps, sigma_min, sigma_max)


def ays_sdxl(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    """The published SDXL AYS grid, interpolated to ``num_steps`` and mapped onto [sigma_min, sigma_max]."""
    return _ays(AYS_SIGMAS["sdxl"], num_steps, sigma_min, sigma_max)


@dataclass(frozen=True)
class FlowGrid:
    """The settings of a flow-matching model's own grid (diffusers' FlowMatchEulerDiscreteScheduler).

    ``shift`` s maps flow time t -> s t / (1 + (s - 1) t), i.e. sigma -> s sigma in the EDM form (sigma = t / (1 - t);
    SD3, arXiv 2403.03206 eq. 23); ``dynamic`` marks ``use_dynamic_shifting`` (s = exp(mu) per resolution), whose
    grid ends at the unshifted 1 / train_steps; ``train_steps`` is the scheduler's num_train_timesteps.
    ``per_step_end`` is FluxPipeline's own grid: linspace(1, 1 / N, N) shifted (it passes these sigmas to the
    scheduler).
    """

    shift: float = 1.0
    dynamic: bool = False
    train_steps: int = 1000
    per_step_end: bool = False

    def __post_init__(self) -> None:
        if not (self.shift > 0 and math.isfinite(self.shift)):
            raise UserError(f"the flow shift must be a positive number, got {self.shift}; use shift > 0 (1: no shift)")
        if self.train_steps < 2:
            raise UserError(f"a flow scheduler needs num_train_timesteps >= 2, got {self.train_steps}")


def shifted_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """t -> s t / (1 + (s - 1) t) (the shift of SD3 and FlowMatchEulerDiscreteScheduler)."""
    return shift * t / (1 + (shift - 1) * t)


def flow(num_steps: int, grid: FlowGrid) -> torch.Tensor:
    """FlowMatchEulerDiscreteScheduler.set_timesteps(N) in the EDM form: t_i = shift(linspace(1, t_end, N)), then 0.

    t_end is the scheduler's sigma_min: 1 / T shifted once (static shift; so the last t before 0 is shifted twice, as
    in diffusers) or 1 / T (dynamic shifting); FluxPipeline's grid (``per_step_end``) ends at 1 / N before the shift.
    sigma_i = t_i / (1 - t_i): sigma_0 = inf (t = 1) and a final 0.
    """
    first = torch.tensor([1.0 / (num_steps if grid.per_step_end else grid.train_steps)], dtype=torch.float64)
    t_end = float(first if grid.dynamic or grid.per_step_end else shifted_time(first, grid.shift))
    t = shifted_time(torch.linspace(1.0, t_end, num_steps, dtype=torch.float64), grid.shift)
    return torch.cat([t / (1 - t), torch.zeros(1, dtype=torch.float64)])  # t = 1 divides by 0: +inf


@dataclass(frozen=True)
class Schedule:
    """A named sigma grid family with its default exponent.

    ``needs_table`` marks a schedule built on the model's training sigmas: ``make`` then takes the
    table as a fifth argument; ``needs_flow`` a flow model's grid (``make(num_steps, FlowGrid)``, from t = 1).
    """

    name: str
    make: Callable[..., torch.Tensor]
    default_rho: float
    summary: str
    needs_table: bool = False
    needs_flow: bool = False


SCHEDULES: dict[str, Schedule] = {
    s.name: s
    for s in (
        Schedule("polynomial", polynomial, 7.0, "EDM polynomial in sigma^(1/rho), rho = 7 by default"),
        Schedule("logsnr", logsnr, 1.0, "uniform in log sigma (half-logSNR); rho unused"),
        Schedule("time_uniform", time_uniform, 1.0, "uniform in VP-linear time t^(1/rho); rho = 1"),
        Schedule("time_quadratic", time_uniform, 2.0, "time_uniform with rho = 2 (DEIS)"),
        Schedule("discrete", discrete, 1.0, "the model's own training timesteps (DDPM/LDM models), rho = 1", True),
        Schedule(
            "ays_sd15",
            ays_sd15,
            1.0,
            "Align Your Steps grid of Stable Diffusion 1.5, log-linear to N steps (exact for sigma 0.029-14.615)",
        ),
        Schedule(
            "ays_sdxl",
            ays_sdxl,
            1.0,
            "Align Your Steps grid of SDXL, log-linear to N steps (exact for sigma 0.029-14.615)",
        ),
        Schedule(
            "flow",
            flow,
            1.0,
            "flow models: FlowMatchEulerDiscreteScheduler's grid from t = 1 (sigma = inf), key shift; rho unused",
            needs_flow=True,
        ),
    )
}


def register_schedule(schedule: Schedule) -> None:
    """Add a named schedule (a plugin's: entry point group ``diffsampler.schedules``)."""
    SCHEDULES[schedule.name] = schedule


def load_plugins() -> None:
    """Add the schedules of installed plugins to ``SCHEDULES``, once per process."""
    load_group("diffsampler.schedules", SCHEDULES)


def validate_sigmas(sigmas: Sequence[float] | torch.Tensor, infinite_start: bool = False) -> torch.Tensor:
    """Check a grid: at least 2 points, strictly descending, positive (a final 0 is allowed); with
    ``infinite_start`` its first point may be +inf (t = 1 of a flow model)."""
    grid = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    if grid.numel() < 2:
        raise UserError(f"a sigma grid needs at least 2 points, got {grid.numel()}")
    inner = grid[1:] if infinite_start and grid[0] == math.inf else grid
    if not torch.isfinite(inner).all():
        raise UserError("the sigma grid contains NaN or infinity")
    if not (grid[1:] < grid[:-1]).all():
        raise UserError(f"the sigma grid must be strictly descending, got {shorten(grid.tolist())}")
    if (grid[:-1] <= 0).any() or grid[-1] < 0:
        raise UserError("the sigma grid must be positive (only its last point may be 0)")
    return grid


def get_sigmas(
    schedule: str,
    num_steps: int,
    sigma_min: float,
    sigma_max: float,
    rho: float | None = None,
    discrete_sigmas: torch.Tensor | None = None,
    flow_grid: FlowGrid | None = None,
) -> torch.Tensor:
    """The validated grid of ``num_steps`` intervals of the named schedule.

    ``discrete_sigmas`` is the model's ascending table of training sigmas, needed by ``discrete``; ``flow_grid`` the
    flow model's grid settings, needed by ``flow``.
    """
    load_plugins()
    if schedule not in SCHEDULES:
        raise unknown_choice("schedule", schedule, SCHEDULES)
    if num_steps < 1:
        raise UserError(f"a schedule needs at least 1 step, got {num_steps}")
    if SCHEDULES[schedule].needs_flow:
        if flow_grid is None:
            raise UserError(
                f"the '{schedule}' schedule needs a flow-matching model (velocity prediction); choose another"
            )
        return validate_sigmas(SCHEDULES[schedule].make(num_steps, flow_grid), infinite_start=True)
    if not 0 < sigma_min < sigma_max:
        raise UserError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    spec = SCHEDULES[schedule]
    exponent = spec.default_rho if rho is None else rho
    if exponent <= 0:
        raise UserError(f"rho must be positive, got {exponent}")
    if not spec.needs_table:
        return validate_sigmas(spec.make(num_steps, sigma_min, sigma_max, exponent))
    if discrete_sigmas is None:
        raise UserError(
            f"the '{schedule}' schedule needs a model with discrete training "
            "timesteps (e.g. diffusers:PATH); choose another schedule"
        )
    table = torch.as_tensor(discrete_sigmas).detach().to("cpu", torch.float64).flatten()
    return validate_sigmas(spec.make(num_steps, sigma_min, sigma_max, exponent, table))
