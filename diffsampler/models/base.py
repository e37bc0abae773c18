"""The denoiser interface: D(x, sigma) -> x0_hat in the EDM form x = x0 + sigma * eps.

The probability-flow ODE every solver integrates is dx/dsigma = (x - D(x, sigma)) / sigma
(EDM, arXiv 2206.00364 eq. 3 with s(t) = 1, sigma(t) = t).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

import torch

from diffsampler.errors import UserError
from diffsampler.schedules import FlowGrid


@contextlib.contextmanager
def own_precision(denoiser: Denoiser) -> Iterator[Denoiser]:
    """``denoiser`` with its network in its own dtype for the duration of the block (autocast restored after)."""
    lowered = denoiser.autocast_dtype
    denoiser.set_autocast(None)
    try:
        yield denoiser
    finally:
        denoiser.set_autocast(lowered)


def sigma_batch(sigma: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sigma as a float64 tensor of shape (B,) for a batch x of shape (B, ...)."""
    s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
    if s.ndim == 0:
        return s.expand(x.shape[0])
    return s.reshape(-1).expand(x.shape[0]) if s.numel() == 1 else s.reshape(x.shape[0])


class Denoiser(torch.nn.Module):
    """Base class of every model: counts its calls (one call on a batch = one NFE).

    Subclasses implement ``denoise(x, sigma, cond)`` with sigma of shape (B,) in float64 and
    set ``sigma_min``, ``sigma_max`` and ``sample_shape`` (the shape of one sample). Models with a
    bottleneck (U-Nets) store its pooled feature of the latest call in ``last_features`` (B, F), so a
    solver can read it without another NFE (AMED's predictor input); others leave it None.

    Discrete-time models (DDPM, latent diffusion) set ``discrete_sigmas``, the ascending float64 sigma
    of each training timestep, which the ``discrete`` schedule needs; flow models set ``flow_grid``. Latent
    models set ``latent`` and
    override ``decode`` (latents -> images in [-1, 1]); for the others ``decode`` is the identity.
    """

    last_features: torch.Tensor | None = None
    supports_autocast: bool = False
    """Whether ``set_autocast`` accepts a dtype (a model with a network: U-Nets)."""
    autocast_dtype: torch.dtype | None = None
    """The dtype the network runs under autocast (``set_autocast``; U-Nets only), None for its own dtype."""
    discrete_sigmas: torch.Tensor | None = None
    flow_grid: FlowGrid | None = None
    """A flow-matching model's own grid settings (``diffsampler.models.flow``), for the ``flow`` schedule."""
    latent: bool = False

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sample_shape: tuple[int, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor, cond: Any = None) -> torch.Tensor:
        self.calls += 1
        return self.denoise(x, sigma_batch(sigma, x), cond)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Samples in the model's space -> images (the identity unless the model is latent)."""
        return x

    def set_autocast(self, dtype: torch.dtype | None) -> None:
        """Run the network under autocast to ``dtype`` (None: its own dtype). Only models that set
        ``supports_autocast`` (diffsampler's U-Nets) take a dtype; the others (analytic models, which compute in the
        state's dtype, and external networks, which have their own ``dtype`` option) refuse."""
        if dtype is not None:
            raise UserError(
                f"precision {str(dtype).removeprefix('torch.')} applies to diffsampler's U-Net models, not to "
                f"{type(self).__name__} (use precision float32; external models have a model option dtype)"
            )

    def reset_calls(self) -> None:
        self.calls = 0

    def content_hash(self) -> str:
        """sha256 of every parameter and buffer, so artefacts made for this model can be matched to it."""
        h = hashlib.sha256()
        for name, t in sorted(self.state_dict().items()):
            h.update(name.encode())
            # reshape(-1) after contiguous(): a channels-last 1x1 kernel counts as contiguous with a last stride > 1
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        """Metadata recorded with results: what the model is, its content hash and its sigma range."""
        return {
            "class": type(self).__name__,
            "sha256": self.content_hash(),
            "sigma_min": self.sigma_min,
            "sigma_max": self.sigma_max,
            "sample_shape": list(self.sample_shape),
            # only when lowered, so that hashes of earlier (float32) runs and caches stay valid
            **({"autocast": str(self.autocast_dtype).removeprefix("torch.")} if self.autocast_dtype else {}),
        }
