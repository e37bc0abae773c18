"""Loading diffusers models from a local ``save_pretrained`` folder or a hub id (weights as safetensors only).

Three layouts: a pipeline folder (``model_index.json`` with ``unet/`` and ``scheduler/``, plus ``vae/`` for
a latent model and ``text_encoder/`` + ``tokenizer/`` for a text-conditional one), a flow-matching pipeline
(``transformer/`` and a FlowMatchEulerDiscreteScheduler: Stable Diffusion 3, Flux; ``diffusers_flow``), or a bare
``UNet2DModel`` folder (``config.json`` + weights) with ``scheduler_config.json`` beside them.
The scheduler supplies only the training schedule (alphas_cumprod) and the prediction type.
A name that is no local folder but looks like ``owner/name`` is fetched from the Hugging Face hub
(configs, tokenizer files and the default safetensors weights of each component; no pickled weights).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from diffsampler.errors import UserError, plain_message, unknown_choice
from diffsampler.models.base import Denoiser

DTYPES = ("float32", "float16", "bfloat16")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_FILES = [
    "*.json",
    "*.txt",
    "*.model",
    "diffusion_pytorch_model.safetensors",
    "*/diffusion_pytorch_model.safetensors",
    "*/model.safetensors",
]
"""What a hub download fetches: configs, tokenizer files, each component's default safetensors weights."""
PIXEL_OPTIONS = {"class_label": None, "dtype": "float32"}
LATENT_OPTIONS = {"guidance": 7.5, "prompt": "", "negative_prompt": "", "dtype": "float32"}


def _import_diffusers() -> Any:
    try:
        import diffusers
    except ImportError as exc:
        raise UserError("diffusers models need the optional extra: pip install 'diffsampler[diffusers]'") from exc
    return diffusers


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc


def _options(given: Mapping[str, Any], allowed: Mapping[str, Any], kind: str) -> dict[str, Any]:
    for key in given:
        if key not in allowed:
            raise unknown_choice(f"model option of a {kind}", key, allowed)
    options = {**allowed, **given}
    if options["dtype"] not in DTYPES:
        raise unknown_choice("model dtype", str(options["dtype"]), DTYPES)
    return options


def _from_pretrained(cls: Any, folder: Path, what: str, **kwargs: Any) -> Any:
    try:
        return cls.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = plain_message(exc)
        hint = (
            "; only safetensors weights load (pickled .bin weights can run code): re-save with safe_serialization=True"
            if "safetensors" in first
            else ""
        )
        raise UserError(f"cannot load the {what} from {folder}: {first}{hint}") from exc


def _component_class(library: Any, name: str, what: str) -> Any:
    cls = getattr(library, name, None)
    if cls is None:
        raise UserError(
            f"the {what} class '{name}' is not in {library.__name__} {getattr(library, '__version__', '')}; upgrade it"
        )
    return cls


def training_schedule(config_path: Path) -> tuple[torch.Tensor, str]:
    """(alphas_cumprod, prediction_type) of the scheduler whose config is at ``config_path``."""
    diffusers = _import_diffusers()
    config = _read_json(config_path)
    cls = _component_class(diffusers, str(config.get("_class_name", "DDPMScheduler")), "scheduler")
    scheduler = cls.from_config(config)
    alphas_cumprod = getattr(scheduler, "alphas_cumprod", None)
    if alphas_cumprod is None:
        raise UserError(
            f"the scheduler {cls.__name__} in {config_path} has no discrete VP schedule (alphas_cumprod); "
            "only DDPM-style models are supported"
        )
    return torch.as_tensor(alphas_cumprod), str(scheduler.config.get("prediction_type", "epsilon"))


def _check_unet(unet: Any, folder: Path) -> None:
    if unet.config.get("time_embedding_type", "positional") != "positional":
        raise UserError(
            f"the U-Net in {folder} uses '{unet.config.time_embedding_type}' time embeddings "
            "(a continuous-time model); only discrete-timestep models are supported"
        )


def _encode(tokenizer: Any, text_encoder: Any, prompt: str) -> torch.Tensor:
    """The text encoder's last hidden state for one prompt, (1, L, D), padded to the tokenizer's length."""
    ids = tokenizer(
        prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return text_encoder(ids)[0].float()


def _load_bare_unet(folder: Path, options: Mapping[str, Any]) -> Denoiser:
    from diffsampler.models.diffusers_models import DiffusersUNetDenoiser

    diffusers = _import_diffusers()
    scheduler_config = folder / "scheduler_config.json"
    if not scheduler_config.is_file():
        raise UserError(
            f"{folder} has a U-Net but no scheduler_config.json beside it; "
            "save the scheduler into the same folder or use a pipeline folder"
        )
    opts = _options(options, PIXEL_OPTIONS, "diffusers pixel model")
    unet = _from_pretrained(
        _component_class(diffusers, "UNet2DModel", "U-Net"),
        folder,
        "U-Net",
        torch_dtype=getattr(torch, opts["dtype"]),
        use_safetensors=True,
    )
    _check_unet(unet, folder)
    alphas_cumprod, prediction_type = training_schedule(scheduler_config)
    return DiffusersUNetDenoiser(unet, alphas_cumprod, prediction_type, opts["class_label"])


def _load_flow_pipeline(folder: Path, index: Mapping[str, Any], options: Mapping[str, Any]) -> Denoiser:
    """An SD3 / Flux pipeline folder: FlowMatchEulerDiscreteScheduler + transformer, loaded by diffusers itself."""
    from diffsampler.models.diffusers_flow import FLOW_OPTIONS, FLOW_SCHEDULER, flow_pipeline_denoiser, time_scale_of

    diffusers = _import_diffusers()
    scheduler = str(_read_json(folder / "scheduler" / "scheduler_config.json").get("_class_name"))
    if scheduler != FLOW_SCHEDULER:
        raise UserError(
            f"{folder} has a transformer with the scheduler '{scheduler}'; "
            f"flow-matching pipelines need {FLOW_SCHEDULER}"
        )
    kind = str(index["transformer"][1])
    time_scale_of(kind, folder)
    opts = _options(options, {**FLOW_OPTIONS[kind], "dtype": "float32"}, f"{kind} pipeline")
    dtype = getattr(torch, opts["dtype"])
    cls = _component_class(diffusers, str(index.get("_class_name", "DiffusionPipeline")), "pipeline")
    expected, _ = cls._get_signature_keys(cls)
    absent = {name: None for name in expected if not (index.get(name) or [None])[0]}  # saved as None (SD3 without T5)
    pipeline = _from_pretrained(cls, folder, "pipeline", torch_dtype=dtype, use_safetensors=True, **absent)
    return flow_pipeline_denoiser(pipeline, folder, opts).to(dtype)


def _load_pipeline(folder: Path, options: Mapping[str, Any]) -> Denoiser:
    from diffsampler.models.diffusers_models import DiffusersUNetDenoiser, LatentDiffusionDenoiser

    diffusers = _import_diffusers()
    index = _read_json(folder / "model_index.json")
    if "transformer" in index and "unet" not in index:
        return _load_flow_pipeline(folder, index, options)
    for part in ("unet", "scheduler"):
        if part not in index:
            raise UserError(
                f"{folder}/model_index.json names no '{part}'; expected a DDPM or latent diffusion pipeline"
            )
    opts = _options(
        options,
        LATENT_OPTIONS if "vae" in index else PIXEL_OPTIONS,
        "latent diffusion model" if "vae" in index else "diffusers pixel model",
    )
    dtype = getattr(torch, opts["dtype"])
    unet_class = _component_class(diffusers, index["unet"][1], "U-Net")
    unet = _from_pretrained(unet_class, folder / "unet", "U-Net", torch_dtype=dtype, use_safetensors=True)
    _check_unet(unet, folder)
    alphas_cumprod, prediction_type = training_schedule(folder / "scheduler" / "scheduler_config.json")
    if "vae" not in index:
        return DiffusersUNetDenoiser(unet, alphas_cumprod, prediction_type, opts["class_label"])
    if index["vae"][1] != "AutoencoderKL":
        raise UserError(f"the VAE of {folder} is a {index['vae'][1]}; only AutoencoderKL latents are supported")
    vae = _from_pretrained(diffusers.AutoencoderKL, folder / "vae", "VAE", torch_dtype=dtype, use_safetensors=True)
    cond = uncond = None
    if unet_class.__name__ != "UNet2DModel":
        if not (index.get("text_encoder") or [None])[0] or not (index.get("tokenizer") or [None])[0]:
            raise UserError(
                f"{folder} has a conditional U-Net but no text_encoder and tokenizer; "
                "only text-conditional latent models are supported"
            )
        try:
            import transformers
        except ImportError as exc:
            raise UserError(
                "text-conditional latent models need transformers: pip install 'diffsampler[diffusers]'"
            ) from exc
        tokenizer = _from_pretrained(
            _component_class(transformers, index["tokenizer"][1], "tokenizer"), folder / "tokenizer", "tokenizer"
        )
        text_encoder = _from_pretrained(
            _component_class(transformers, index["text_encoder"][1], "text encoder"),
            folder / "text_encoder",
            "text encoder",
            use_safetensors=True,
        )
        cond = _encode(tokenizer, text_encoder.eval(), str(opts["prompt"]))
        uncond = _encode(tokenizer, text_encoder, str(opts["negative_prompt"]))
    return LatentDiffusionDenoiser(
        unet, vae, alphas_cumprod, prediction_type, cond, uncond, float(opts["guidance"])
    ).to(dtype)


def local_folder(path: str) -> Path:
    """``path`` itself when it is a folder; a hub id (``owner/name``) is downloaded (or found in the cache)."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    if not HUB_ID.match(path):
        raise UserError(
            f"diffusers model folder not found: {folder}; give a save_pretrained folder or a hub id owner/name"
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise UserError("hub ids need huggingface_hub: pip install 'diffsampler[diffusers]'") from exc
    try:
        return Path(snapshot_download(path, allow_patterns=HUB_FILES))
    except Exception as exc:  # noqa: BLE001 - network and hub errors of every kind become one line
        raise UserError(
            f"'{path}' is no local folder and fetching it from the Hugging Face hub failed "
            f"({plain_message(exc)}); check the id and the connection, or pass a local folder"
        ) from exc


def load_diffusers(path: str, options: Mapping[str, Any] | None = None) -> Denoiser:
    """An EDM-form denoiser from a diffusers folder or hub id (pipeline or bare UNet2DModel)."""
    folder = local_folder(path)
    if (folder / "model_index.json").is_file():
        return _load_pipeline(folder, options or {})
    if (folder / "config.json").is_file():
        return _load_bare_unet(folder, options or {})
    raise UserError(f"{folder} is not a diffusers save_pretrained folder (no model_index.json or config.json)")
