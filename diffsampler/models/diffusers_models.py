"""diffusers networks as EDM-form denoisers: pixel-space UNet2DModel and latent models with CFG.

Both wrap a discrete-time VP network (see ``discrete_vp``). The latent model runs in the VAE's latent
space and ``decode`` maps latents to images: images = VAE.decode(z / scaling_factor + shift_factor).
Classifier-free guidance (arXiv 2207.12598 eq. 6): out = out_u + w (out_c - out_u), with the
conditional and unconditional inputs stacked into one network call (one NFE); w = 1 skips the
unconditional half.
"""

from __future__ import annotations

from typing import Any

import torch

from diffsampler.models.discrete_vp import DiscreteVPDenoiser


def _model_output(output: Any, channels: int) -> torch.Tensor:
    """The ``sample`` of a diffusers output; learned-variance models (2C channels) keep the first C."""
    out = output.sample if hasattr(output, "sample") else output[0]
    return out[:, :channels] if out.shape[1] == 2 * channels else out


def _spatial(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _labels(cond: Any, default: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor | None:
    """Integer class labels (B,) from ``cond`` (labels or one-hot rows) or the model's default label."""
    if cond is None:
        return None if default is None else default.to(device).expand(batch)
    labels = torch.as_tensor(cond, device=device)
    if labels.ndim == 2:
        labels = labels.argmax(dim=1)
    return labels.long().reshape(-1).expand(batch) if labels.numel() == 1 else labels.long().reshape(batch)


@torch.no_grad()
def vae_decode(vae: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Latents -> images in [-1, 1] through the VAE decoder (no NFE counted: it is not the denoiser)."""
    config = vae.config
    z = x / config.scaling_factor + (getattr(config, "shift_factor", None) or 0.0)
    dtype = next(vae.parameters()).dtype
    return vae.decode(z.to(dtype)).sample.to(x.dtype).clamp(-1, 1)


class DiffusersUNetDenoiser(DiscreteVPDenoiser):
    """A diffusers ``UNet2DModel`` (pixel space; epsilon, sample or v prediction) with its training schedule.

    ``class_label`` is the default label of a class-conditional model (``num_class_embeds``); a call's
    ``cond`` (labels (B,) or one-hot (B, K)) replaces it.
    """

    def __init__(
        self, unet: torch.nn.Module, alphas_cumprod: torch.Tensor, prediction_type: str, class_label: int | None = None
    ) -> None:
        channels = int(unet.config.in_channels)
        super().__init__(alphas_cumprod, prediction_type, (channels, *_spatial(unet.config.sample_size)))
        self.unet = unet.eval().requires_grad_(False)
        self.channels = channels
        self.class_label = None if class_label is None else torch.tensor([class_label])

    def network(self, x_in: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        labels = _labels(cond, self.class_label, x_in.shape[0], x_in.device)
        return _model_output(self.unet(x_in, t, class_labels=labels), self.channels)


class LatentDiffusionDenoiser(DiscreteVPDenoiser):
    """A latent diffusion model (Stable-Diffusion style): U-Net in the latent space of an ``AutoencoderKL``.

    With a ``UNet2DConditionModel``, ``cond_embedding`` / ``uncond_embedding`` (1, L, D) are the text
    encoder's outputs for the prompt and the negative (empty) prompt; a call's ``cond`` (a (B, L, D)
    tensor) replaces the prompt embedding. ``guidance`` is the classifier-free guidance scale w.
    An unconditional ``UNet2DModel`` (LDM style) takes neither.
    """

    latent = True

    def __init__(
        self,
        unet: torch.nn.Module,
        vae: torch.nn.Module,
        alphas_cumprod: torch.Tensor,
        prediction_type: str,
        cond_embedding: torch.Tensor | None = None,
        uncond_embedding: torch.Tensor | None = None,
        guidance: float = 1.0,
    ) -> None:
        channels = int(unet.config.in_channels)
        super().__init__(alphas_cumprod, prediction_type, (channels, *_spatial(unet.config.sample_size)))
        self.unet = unet.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.channels = channels
        self.guidance = float(guidance)
        self.conditional = cond_embedding is not None
        if self.conditional:
            self.register_buffer("cond_embedding", cond_embedding.detach().clone())
            self.register_buffer(
                "uncond_embedding",
                (torch.zeros_like(cond_embedding) if uncond_embedding is None else uncond_embedding).detach().clone(),
            )

    def network(self, x_in: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        if not self.conditional:
            return _model_output(self.unet(x_in, t), self.channels)
        batch = x_in.shape[0]
        c = (
            (self.cond_embedding if cond is None else torch.as_tensor(cond))
            .to(x_in.device, x_in.dtype)
            .expand(batch, -1, -1)
        )
        if self.guidance == 1.0:
            return _model_output(self.unet(x_in, t, encoder_hidden_states=c), self.channels)
        u = self.uncond_embedding.to(x_in.dtype).expand(batch, -1, -1)
        both = self.unet(torch.cat([x_in, x_in]), torch.cat([t, t]), encoder_hidden_states=torch.cat([u, c]))
        out_u, out_c = _model_output(both, self.channels).chunk(2)
        return out_u + self.guidance * (out_c - out_u)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return vae_decode(self.vae, x)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "latent": True, "guidance": self.guidance if self.conditional else None}
