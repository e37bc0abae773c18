"""LD3 (arXiv 2405.15506): the N + 1 time points learned by gradient descent through the solver.

Parameterisation (LD3's code in its logSNR mode, lambda = -log sigma): N logits theta give the increments softmax(theta)
of u in [0, 1]; u_0 = 0, u_i = sum_{k<i} softmax(theta)_k, and log sigma_i = log sigma_max - u_i (log sigma_max -
log sigma_min). Every theta gives a strictly descending grid with the ends fixed. The loss is LD3's soft
("slack") objective: E_x [ min_{x' in B(x, r sigma_max)} ||Psi_theta(x') - Psi*(x)||^2 ], where Psi* is the
teacher's sample from the latent x and Psi_theta the student's; the student may start anywhere in a small ball
around the teacher's latent, r = 0.001 D / N^2 in units of the unit-variance latent (the LD3 code's default
bound). theta and the per-sample shifts are optimised together with Adam (the shifts with a per-element rate of
r / (5 sqrt(D)), so a few steps can cross the ball), the shifts projected onto the ball after each step; LD3's code
instead alternates the two and keeps a shift only where it lowers that sample's loss. The distance is the squared
L2 norm (LD3's "L2" option; the paper uses LPIPS for RGB images).

Gradients: the solvers take the grid as floats, so d output / d sigma is taken by central finite differences
in log sigma (2 (N - 1) extra solves per step, exact to O(eps^2)) inside an autograd function, while
d output / d x goes through autograd. No solver needs to be differentiable in sigma.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from diffsampler.solvers import SolverSpec

FD_EPS = {torch.float64: 1e-5, torch.float32: 3e-3}
"""Central-difference step in log sigma: O(eps^2) truncation against the state's rounding error."""
SLACK_SCALE = 1e-3
"""r = SLACK_SCALE * D / N^2 (the LD3 code's prior bound)."""

Progress = Callable[[int, float], None]


def grid_from_logits(theta: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """log sigma of the N + 1 points: ends fixed, interior from the cumulative softmax of the N logits."""
    u = torch.cumsum(torch.softmax(theta, dim=0), dim=0)[:-1]
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    inner = hi - u * (hi - lo)
    return torch.cat([inner.new_tensor([hi]), inner, inner.new_tensor([lo])])


def logits_from_grid(sigmas: torch.Tensor) -> torch.Tensor:
    """The logits whose grid is ``sigmas`` (the log of its normalised log-sigma increments)."""
    logs = sigmas.to(torch.float64).log()
    return torch.log((logs[:-1] - logs[1:]) / (logs[0] - logs[-1]))


class _SolveFn(torch.autograd.Function):
    """Psi(x; log sigmas) with autograd in x and finite differences in the interior log sigmas."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, log_sigmas: torch.Tensor, solve: Callable[..., torch.Tensor]
    ) -> torch.Tensor:
        ctx.solve = solve
        ctx.save_for_backward(x, log_sigmas)
        with torch.no_grad():
            return solve(x, log_sigmas.exp().tolist())

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, log_sigmas = ctx.saved_tensors
        grid = log_sigmas.exp().tolist()
        grad_x = None
        if ctx.needs_input_grad[0]:
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                (grad_x,) = torch.autograd.grad(ctx.solve(xg, grid), xg, g)
        grad_s = torch.zeros_like(log_sigmas)
        eps = FD_EPS.get(x.dtype, 3e-3)
        with torch.no_grad():
            for k in range(1, len(grid) - 1):
                up, down = list(grid), list(grid)
                up[k], down[k] = grid[k] * math.exp(eps), grid[k] * math.exp(-eps)
                diff = ctx.solve(x, up) - ctx.solve(x, down)
                grad_s[k] = (diff * g).sum() / (2 * eps)
        return grad_x, grad_s, None


@dataclass(frozen=True)
class Ld3Result:
    """The learned grid and the hard loss (no slack) of the first and the best grid, per sample."""

    sigmas: torch.Tensor
    initial_loss: float
    final_loss: float
    iterations: int


def _loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (out - target).flatten(1).pow(2).sum(1).mean()


def learn_grid(
    spec: SolverSpec,
    options: Mapping[str, Any],
    denoiser: Callable[..., torch.Tensor],
    x: torch.Tensor,
    target: torch.Tensor,
    init: torch.Tensor,
    settings: Mapping[str, Any],
    progress: Progress | None = None,
) -> Ld3Result:
    """Adam on the logits (and the slack shifts) for ``settings['iterations']`` steps; the best hard-loss grid wins.

    ``x`` are the teacher's latents (x_T = sigma_max z), ``target`` its samples, ``init`` the starting grid;
    settings: iterations, lr, slack (bool).
    """
    opts = spec.resolve_options(options)
    sigma_max, sigma_min = float(init[0]), float(init[-1])

    def solve(xs: torch.Tensor, grid: list[float]) -> torch.Tensor:
        return spec.sample_fn(denoiser, xs, grid, **opts)

    theta = logits_from_grid(init).clone().requires_grad_(True)
    steps = init.numel() - 1
    radius = SLACK_SCALE * x[0].numel() / steps**2 * sigma_max
    shift = torch.zeros_like(x, requires_grad=True) if settings.get("slack", True) else None
    shift_lr = radius / math.sqrt(x[0].numel()) / 5
    opt = torch.optim.Adam(
        [
            {"params": [theta], "lr": settings["lr"]},
            *([{"params": [shift], "lr": shift_lr}] if shift is not None else []),
        ]
    )
    best = (_hard_loss(solve, x, target, init.log()), init.log().detach().clone())
    initial = best[0]
    for it in range(int(settings["iterations"])):
        log_sig = grid_from_logits(theta, sigma_min, sigma_max)
        start = x if shift is None else x + shift
        loss = _loss(_SolveFn.apply(start, log_sig, solve), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if shift is not None:
            with torch.no_grad():
                norm = shift.flatten(1).norm(dim=1).clamp_min(1e-30).reshape(-1, *[1] * (x.ndim - 1))
                shift.mul_(torch.clamp(radius / norm, max=1.0))
        hard = _hard_loss(solve, x, target, grid_from_logits(theta.detach(), sigma_min, sigma_max))
        if hard < best[0]:
            best = (hard, grid_from_logits(theta.detach(), sigma_min, sigma_max))
        if progress is not None:
            progress(it + 1, hard)
    return Ld3Result(best[1].exp(), initial, best[0], int(settings["iterations"]))


def _hard_loss(
    solve: Callable[..., torch.Tensor], x: torch.Tensor, target: torch.Tensor, log_sigmas: torch.Tensor
) -> float:
    """The plain objective ||Psi(x) - Psi*(x)||^2 (mean over samples) of a grid."""
    with torch.no_grad():
        return float(_loss(solve(x, log_sigmas.exp().tolist()), target))
