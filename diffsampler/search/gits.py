"""GITS (arXiv 2405.11326): dynamic programming over a teacher's one-step errors between candidate times.

Candidates are the M + 1 points of a fine grid (the paper: the polynomial grid with 10x the student's steps),
along which a teacher (iPNDM) runs once. The cost c_ij of a student step from candidate i to candidate j > i
is the error of one Euler step from the teacher state x_i with the teacher derivative d_i, measured against
the teacher state x_j, averaged over samples. The student's own update rule does not enter: as in the paper
and its code, a multistep solver's history is not modelled; the teacher point stands for the state the
student would have. Two measures are offered: ``l2``, ||x_i + (s_j - s_i) d_i - x_j||, and the paper's
default ``dev``, the distance of that Euler point from the straight line through the teacher's first and last
states minus the teacher's own distance at s_j (the paper's trajectory deviation; its code's default).
The grid of N steps is the path 0 = p_0 < ... < p_N = M minimising sum_k coeff^k c_{p_k p_(k+1)}
(coeff = 1.15 by default in the paper's code weighs later steps more).
"""

from __future__ import annotations

import numpy as np
import torch

from diffsampler.errors import UserError, unknown_choice
from diffsampler.search.teacher import Trajectory

METRICS = ("dev", "l2")
DEFAULT_COEFF = 1.15
CANDIDATES_PER_STEP = 10
"""The paper's candidate grid has 10x the student's steps (61 time points for 6 steps)."""


def _line_distance(x: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Per-sample distance of the points x (..., B, D) from the line through start and end (B, D)."""
    unit = (end - start) / (end - start).norm(dim=-1, keepdim=True).clamp_min(1e-30)
    rel = end - x
    return (rel - (rel * unit).sum(-1, keepdim=True) * unit).norm(dim=-1)


def cost_matrix(traj: Trajectory, metric: str = "dev") -> np.ndarray:
    """c[i, j] (i < j) of one Euler step from teacher point i to candidate j; +inf on and below the diagonal."""
    if metric not in METRICS:
        raise unknown_choice("GITS metric", metric, METRICS)
    sig = traj.sigmas
    states = traj.states.flatten(2).to(torch.float64)
    derivs = traj.derivatives.flatten(2).to(torch.float64)
    m = sig.numel() - 1
    cost = np.full((m + 1, m + 1), np.inf)
    start, end = states[0], states[-1]
    teacher_dev = _line_distance(states, start, end) if metric == "dev" else None
    for i in range(m):
        steps = (sig[i + 1 :] - sig[i]).to(states)[:, None, None]
        euler = states[i][None] + steps * derivs[i][None]
        if metric == "l2":
            err = (euler - states[i + 1 :]).norm(dim=-1)
        else:
            err = _line_distance(euler, start, end) - teacher_dev[i + 1 :]
        cost[i, i + 1 :] = err.mean(dim=1).cpu().numpy()
    return cost


def dp_path(cost: np.ndarray, steps: int, coeff: float = DEFAULT_COEFF) -> list[int]:
    """Indices 0 = p_0 < ... < p_steps = M minimising sum_k coeff^k cost[p_k, p_(k+1)] (exact, O(steps M^2))."""
    m = cost.shape[0] - 1
    if not 1 <= steps <= m:
        raise UserError(f"GITS needs 1 <= steps <= {m} candidate intervals, got {steps} steps")
    upper = np.triu(np.ones((m + 1, m + 1), dtype=bool), 1)
    masked = np.where(upper, cost, np.inf)
    value = masked[:, m].copy()
    value[m] = np.inf
    choice = [np.full(m + 1, m)]
    for _ in range(2, steps + 1):
        total = masked[:, :m] + coeff * value[None, :m]
        nxt = total.argmin(axis=1)
        value = total[np.arange(m + 1), nxt]
        choice.append(nxt)
    path = [0]
    for k in range(steps, 0, -1):
        path.append(int(choice[k - 1][path[-1]]))
    return path


def gits_sigmas(traj: Trajectory, steps: int, metric: str = "dev", coeff: float = DEFAULT_COEFF) -> torch.Tensor:
    """The GITS grid of ``steps`` steps among the teacher's candidate sigmas."""
    path = dp_path(cost_matrix(traj, metric), steps, coeff)
    return traj.sigmas[path].clone()
