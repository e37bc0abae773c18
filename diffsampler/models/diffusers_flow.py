"""diffusers flow-matching pipelines (Stable Diffusion 3, Flux) as EDM-form flow denoisers.

The folder's scheduler must be a ``FlowMatchEulerDiscreteScheduler``; its config gives the ``flow`` schedule's shift
(static, or dynamic: s = exp(mu) with mu linear in the image token count, as the Flux pipeline computes it). The
transformer is given 1000 t (SD3Transformer2DModel) or t (FluxTransformer2DModel, which scales by 1000 itself), as
the pipelines do. SD3 uses classifier-free guidance (arXiv 2207.12598 eq. 6, cond and uncond in one call); Flux a
guidance embedding and packed latents (2x2 patches of the latent as tokens, with their (0, row, col) ids).
Prompts are encoded once at load time by the pipeline's own ``encode_prompt``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import torch

from diffsampler.errors import UserError, unknown_choice
from diffsampler.models.diffusers_models import vae_decode
from diffsampler.models.flow import FlowDenoiser, FlowTime
from diffsampler.schedules import FlowGrid

FLOW_SCHEDULER = "FlowMatchEulerDiscreteScheduler"
TIME_SCALES = {"SD3Transformer2DModel": 1000.0, "FluxTransformer2DModel": 1.0}
"""What the pipeline multiplies t by before the transformer (its timestep scale), per transformer class."""
UNSUPPORTED = ("shift_terminal", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas")
FLOW_OPTIONS = {
    "SD3Transformer2DModel": {"guidance": 7.0, "prompt": "", "negative_prompt": "", "height": None, "width": None},
    "FluxTransformer2DModel": {"guidance": 3.5, "prompt": "", "height": None, "width": None},
}
"""Model options (and defaults: the pipelines') per transformer; height/width in pixels (None: the pipeline's)."""


def flow_grid_of(config: Mapping[str, Any], tokens: int, per_step_end: bool) -> FlowGrid:
    """The FlowGrid of a FlowMatchEulerDiscreteScheduler config for an image of ``tokens`` latent tokens."""
    for key in UNSUPPORTED:
        if config.get(key):
            raise UserError(
                f"the flow scheduler option {key}={config[key]} is not supported; only shift and dynamic shift"
            )
    if config.get("stochastic_sampling"):
        raise UserError("the flow scheduler has stochastic_sampling on; only the deterministic ODE is supported")
    steps = int(config.get("num_train_timesteps", 1000))
    if not config.get("use_dynamic_shifting"):
        return FlowGrid(float(config.get("shift", 1.0)), False, steps, per_step_end)
    lo, hi = float(config.get("base_image_seq_len", 256)), float(config.get("max_image_seq_len", 4096))
    base, top = float(config.get("base_shift", 0.5)), float(config.get("max_shift", 1.15))
    mu = base + (top - base) * (tokens - lo) / (hi - lo)  # the pipelines' calculate_shift
    kind = config.get("time_shift_type", "exponential")
    if kind not in ("exponential", "linear"):
        raise unknown_choice("flow scheduler time_shift_type", str(kind), ("exponential", "linear"))
    return FlowGrid(math.exp(mu) if kind == "exponential" else mu, True, steps, per_step_end)


def time_scale_of(transformer_class: str, folder: Path) -> float:
    if transformer_class not in TIME_SCALES:
        raise UserError(
            f"{folder}'s transformer {transformer_class} has no known timestep scale (what t is multiplied by); "
            f"supported: {', '.join(TIME_SCALES)}"
        )
    return TIME_SCALES[transformer_class]


def pack(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, 4C): Flux's 2x2 latent patches as tokens (FluxPipeline._pack_latents)."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, c: int, h: int, w: int) -> torch.Tensor:
    """The inverse of ``pack``."""
    b = tokens.shape[0]
    return tokens.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def image_ids(h: int, w: int) -> torch.Tensor:
    """(h/2 * w/2, 3) ids (0, row, col) of the packed tokens (FluxPipeline._prepare_latent_image_ids)."""
    rows, cols = torch.meshgrid(torch.arange(h // 2), torch.arange(w // 2), indexing="ij")
    return torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3).float()


class FlowTransformerDenoiser(FlowDenoiser):
    """An SD3 or Flux transformer with its VAE and encoded prompt(s); latents (C, H, W) as the pipelines make them.

    ``embeds`` holds the pipeline's prompt encodings: ``prompt`` (1, L, D) and ``pooled`` (1, P), for SD3 also
    ``negative`` and ``negative_pooled``, for Flux ``text_ids`` (L, 3). ``guidance`` is SD3's CFG scale w (1 skips the
    unconditional half) or Flux's embedded guidance.
    """

    latent = True

    def __init__(
        self,
        transformer: torch.nn.Module,
        vae: torch.nn.Module,
        embeds: Mapping[str, torch.Tensor],
        sample_shape: tuple[int, int, int],
        flow_grid: FlowGrid,
        guidance: float,
    ) -> None:
        kind = type(transformer).__name__
        super().__init__(None, sample_shape, flow_grid, FlowTime(scale=TIME_SCALES[kind]))
        self.transformer = transformer.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.flux = kind == "FluxTransformer2DModel"
        self.guidance = float(guidance)
        for name, value in embeds.items():
            self.register_buffer(name, value.detach().clone())

    def velocity(self, x_t: torch.Tensor, time: torch.Tensor, cond: Any) -> torch.Tensor:
        if self.flux:
            return self._flux(x_t, time)
        batch = x_t.shape[0]
        prompt, pooled = self.prompt.expand(batch, -1, -1), self.pooled.expand(batch, -1)
        if self.guidance == 1.0:
            return self.transformer(
                hidden_states=x_t, timestep=time, encoder_hidden_states=prompt, pooled_projections=pooled
            ).sample
        both = self.transformer(
            hidden_states=torch.cat([x_t, x_t]),
            timestep=torch.cat([time, time]),
            encoder_hidden_states=torch.cat([self.negative.expand(batch, -1, -1), prompt]),
            pooled_projections=torch.cat([self.negative_pooled.expand(batch, -1), pooled]),
        ).sample
        out_u, out_c = both.chunk(2)
        return out_u + self.guidance * (out_c - out_u)

    def _flux(self, x_t: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        batch, c, h, w = x_t.shape
        embedded = self.transformer.config.guidance_embeds
        out = self.transformer(
            hidden_states=pack(x_t),
            timestep=time,
            guidance=torch.full((batch,), self.guidance, device=x_t.device) if embedded else None,
            pooled_projections=self.pooled.expand(batch, -1),
            encoder_hidden_states=self.prompt.expand(batch, -1, -1),
            txt_ids=self.text_ids,
            img_ids=image_ids(h, w).to(x_t.device, x_t.dtype),
        ).sample
        return unpack(out, c, h, w)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return vae_decode(self.vae, x)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "latent": True, "guidance": self.guidance}


def _encode(pipeline: Any, flux: bool, options: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The pipeline's own prompt encodings, float32 on the CPU."""
    with torch.no_grad():
        if flux:
            prompt, pooled, text_ids = pipeline.encode_prompt(str(options["prompt"]), None, device="cpu")
            return {"prompt": prompt.float(), "pooled": pooled.float(), "text_ids": text_ids.float()}
        prompt, negative, pooled, negative_pooled = pipeline.encode_prompt(
            str(options["prompt"]),
            None,
            None,
            device="cpu",
            do_classifier_free_guidance=True,
            negative_prompt=str(options["negative_prompt"]),
        )
    return {
        "prompt": prompt.float(),
        "negative": negative.float(),
        "pooled": pooled.float(),
        "negative_pooled": negative_pooled.float(),
    }


def flow_pipeline_denoiser(pipeline: Any, folder: Path, options: Mapping[str, Any]) -> FlowTransformerDenoiser:
    """The denoiser of a loaded SD3 / Flux pipeline (``options``: FLOW_OPTIONS of its transformer, checked)."""
    transformer = pipeline.transformer
    kind = type(transformer).__name__
    time_scale_of(kind, folder)
    flux = kind == "FluxTransformer2DModel"
    scale = 2 ** (len(pipeline.vae.config.block_out_channels) - 1)
    default = (128 if flux else int(transformer.config.sample_size)) * scale
    height, width = (int(options[k] or default) for k in ("height", "width"))
    if height % (2 * scale) or width % (2 * scale):
        raise UserError(f"height and width must be multiples of {2 * scale} for {folder}, got {height}x{width}")
    h, w = height // scale, width // scale
    channels = int(transformer.config.in_channels) // (4 if flux else 1)
    patch = 2 if flux else int(transformer.config.patch_size)
    grid = flow_grid_of(pipeline.scheduler.config, (h // patch) * (w // patch), per_step_end=flux)
    embeds = _encode(pipeline, flux, options)
    return FlowTransformerDenoiser(
        transformer, pipeline.vae, embeds, (channels, h, w), grid, float(options["guidance"])
    )
