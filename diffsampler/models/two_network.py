"""The PDM two-network scheme (arXiv 2207.04316, model splitting): one denoiser for high noise,
another for low noise, chosen per sample by its sigma.

Sample b goes to ``high`` when sigma_b > switch_sigma and to ``low`` otherwise. The PDM authors split
at SNR 0.25; in the EDM form SNR = 1 / sigma^2, so that is switch_sigma = 2. One call of this
denoiser is one NFE, whichever network(s) the batch needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from diffsampler.errors import UserError
from diffsampler.models.base import Denoiser

PDM_SWITCH_SIGMA = 2.0
"""sigma at SNR = 1 / sigma^2 = 0.25, the split of the PDM ImageNet models."""


class TwoNetworkDenoiser(Denoiser):
    """D(x, sigma) = high(x, sigma) if sigma > switch_sigma else low(x, sigma), per sample."""

    def __init__(self, high: Denoiser, low: Denoiser, switch_sigma: float = PDM_SWITCH_SIGMA) -> None:
        super().__init__()
        if tuple(high.sample_shape) != tuple(low.sample_shape):
            raise UserError(
                f"the two networks differ in sample shape: {tuple(high.sample_shape)} vs {tuple(low.sample_shape)}"
            )
        if switch_sigma <= 0:
            raise UserError(f"switch_sigma must be positive, got {switch_sigma}")
        self.high = high
        self.low = low
        self.switch_sigma = float(switch_sigma)
        self.sample_shape = tuple(high.sample_shape)
        self.supports_autocast = high.supports_autocast and low.supports_autocast
        self.sigma_min = min(high.sigma_min, low.sigma_min)
        self.sigma_max = max(high.sigma_max, low.sigma_max)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        upper = sigma > self.switch_sigma
        if bool(upper.all()):
            out = self.high(x, sigma, cond)
            self.last_features = self.high.last_features
            return out
        if not bool(upper.any()):
            out = self.low(x, sigma, cond)
            self.last_features = self.low.last_features
            return out
        out = torch.empty_like(x)
        out[upper] = self.high(x[upper], sigma[upper], cond).to(x.dtype)
        out[~upper] = self.low(x[~upper], sigma[~upper], cond).to(x.dtype)
        self.last_features = self._merged_features(upper)
        return out

    def set_autocast(self, dtype: torch.dtype | None) -> None:
        self.autocast_dtype = dtype
        self.high.set_autocast(dtype)
        self.low.set_autocast(dtype)

    def _merged_features(self, upper: torch.Tensor) -> torch.Tensor | None:
        """Each sample's feature from the network that served it, when both networks have the same width."""
        hi, lo = self.high.last_features, self.low.last_features
        if hi is None or lo is None or hi.shape[1:] != lo.shape[1:]:
            return None
        merged = hi.new_empty((upper.shape[0], *hi.shape[1:]))
        merged[upper] = hi
        merged[~upper] = lo.to(hi.dtype)
        return merged

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "switch_sigma": self.switch_sigma,
            "high": self.high.describe(),
            "low": self.low.describe(),
        }


def load_two_network(path: str | Path, values: dict[str, Any], load: Any) -> TwoNetworkDenoiser:
    """A two-network denoiser from a YAML spec {kind: two_network, high, low, switch_sigma}.

    ``high`` and ``low`` are model names or checkpoint paths (relative to the spec's folder);
    ``load`` builds one of them (``diffsampler.models.load_model``).
    """
    allowed = {"kind", "high", "low", "switch_sigma"}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise UserError(f"unknown key '{unknown[0]}' in {path}; a two-network spec has: {', '.join(sorted(allowed))}")
    missing = [k for k in ("high", "low") if k not in values]
    if missing:
        raise UserError(f"two-network spec {path} lacks '{missing[0]}' (a model name or checkpoint path)")
    base = Path(path).parent

    def resolve(name: str) -> str:
        candidate = base / name
        return str(candidate) if candidate.exists() else name

    switch = values.get("switch_sigma", PDM_SWITCH_SIGMA)
    if isinstance(switch, bool) or not isinstance(switch, (int, float)):
        raise UserError(f"switch_sigma in {path} must be a number, got {switch!r}")
    return TwoNetworkDenoiser(load(resolve(str(values["high"]))), load(resolve(str(values["low"]))), float(switch))
