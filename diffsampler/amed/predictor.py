"""The AMED predictor g(t_n, t_{n+1}, feature) -> (r_n, c_n, a_n) of arXiv 2312.00094 (section 3.3).

A shared sinusoidal embedding of log t_n and log t_{n+1} (each followed by a linear layer and SiLU),
a two-layer encoder of the model's bottleneck feature to a few values, and sigmoid heads:
r in (0, 1) places the intermediate time s_n = t_{n+1}^r t_n^(1-r); the optional direction scale c
and time scale a are sigmoids mapped to [1 - k, 1 + k] (k = 0 fixes them to 1). With the defaults
(64 feature values, hidden width 128, 4 encoded values, 8 time channels) it has 8,929 parameters,
8,971 with both scales.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffsampler.solvers.amed import FALLBACK_FEATURE_DIM, AmedParams


@dataclass(frozen=True)
class PredictorConfig:
    """Sizes and scale ranges of an AMED predictor (all stored in its checkpoint)."""

    feature_dim: int = FALLBACK_FEATURE_DIM
    hidden_dim: int = 128
    bottleneck_dim: int = 4
    time_channels: int = 8
    max_period: float = 100.0
    scale_dir: float = 0.0
    scale_time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sinusoidal_embedding(u: torch.Tensor, channels: int, max_period: float) -> torch.Tensor:
    """[sin(f_k u), cos(f_k u)] with f_k = max_period^(-k / (channels/2 - 1)), k = 0 .. channels/2 - 1."""
    half = channels // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=u.dtype, device=u.device) / max(half - 1, 1))
    angles = u[..., None] * freqs
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def _scaled_sigmoid(z: torch.Tensor, k: float) -> torch.Tensor:
    """A sigmoid mapped to [1 - k, 1 + k]."""
    return 1.0 - k + 2.0 * k * torch.sigmoid(z)


class AMEDPredictor(nn.Module):
    """g(t_n, t_{n+1}, feature) -> AmedParams; a zero feature stands for a skipped evaluation (AFS)."""

    def __init__(self, config: PredictorConfig | None = None, seed: int = 0) -> None:
        super().__init__()
        self.config = config or PredictorConfig()
        cfg = self.config
        self.time_layer = nn.Linear(cfg.time_channels, cfg.time_channels)
        self.enc_in = nn.Linear(cfg.feature_dim, cfg.hidden_dim)
        self.enc_out = nn.Linear(cfg.hidden_dim, cfg.bottleneck_dim)
        width = cfg.bottleneck_dim + 2 * cfg.time_channels
        self.head_r = nn.Linear(width, 1)
        self.head_c = nn.Linear(width, 1) if cfg.scale_dir > 0 else None
        self.head_a = nn.Linear(width, 1) if cfg.scale_time > 0 else None
        self._initialise(torch.Generator().manual_seed(seed))

    def _initialise(self, gen: torch.Generator) -> None:
        """Xavier-uniform time layer; N(0, 1/fan_in) weights elsewhere; zero biases."""
        with torch.no_grad():
            nn.init.xavier_uniform_(self.time_layer.weight, generator=gen)
            for layer in (self.enc_in, self.enc_out, self.head_r, self.head_c, self.head_a):
                if layer is not None:
                    layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) / math.sqrt(layer.in_features))
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    module.bias.zero_()

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, t_cur: float, t_next: float, features: torch.Tensor | None, batch: int) -> AmedParams:
        """Step parameters for ``batch`` samples; ``features`` (B, feature_dim) or None (zeros)."""
        weight = self.time_layer.weight
        if features is None:
            features = torch.zeros(batch, self.config.feature_dim, dtype=weight.dtype, device=weight.device)
        features = features.to(weight.dtype).reshape(batch, -1)
        times = torch.log(torch.tensor([t_cur, t_next], dtype=weight.dtype, device=weight.device))
        emb = F.silu(self.time_layer(sinusoidal_embedding(times, self.config.time_channels, self.config.max_period)))
        code = self.enc_out(F.silu(self.enc_in(features)))
        h = torch.cat([code, emb.reshape(1, -1).expand(batch, -1)], dim=1)
        r = torch.sigmoid(self.head_r(h))[:, 0]
        ones = torch.ones_like(r)
        c = _scaled_sigmoid(self.head_c(h)[:, 0], self.config.scale_dir) if self.head_c is not None else ones
        a = _scaled_sigmoid(self.head_a(h)[:, 0], self.config.scale_time) if self.head_a is not None else ones
        return AmedParams(r, c, a)
