"""diffusers models as EDM denoisers, checked against diffusers' own schedulers on tiny random networks."""

import copy
import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffsampler.errors import UserError  # noqa: E402
from diffsampler.models import load_model  # noqa: E402
from diffsampler.models.diffusers_models import LatentDiffusionDenoiser  # noqa: E402
from diffsampler.schedules import get_sigmas, sigma_of_timestep, timestep_of_sigma  # noqa: E402
from diffsampler.solvers import get_solver  # noqa: E402

PREDICTIONS = ["epsilon", "sample", "v_prediction"]
STEPS = 10
"""DDIM steps in the comparisons."""


def tiny_unet(seed: int = 0) -> "diffusers.UNet2DModel":
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )


def ddim(prediction_type: str, spacing: str = "trailing") -> "diffusers.DDIMScheduler":
    """DDIM on the default linear betas, no clipping, final step to abar = 1.

    'trailing' spacing (999, 899, ..., 99) is the one whose steps go exactly from one listed timestep to
    the next: DDIM always steps to t - 1000 // steps, so its 'linspace' list (999, 888, ...) is not
    the grid it integrates on.
    """
    return diffusers.DDIMScheduler(
        prediction_type=prediction_type, clip_sample=False, set_alpha_to_one=True, timestep_spacing=spacing
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks: one thread avoids OpenMP spin overhead (20x slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=PREDICTIONS)
def saved(request, tmp_path_factory):
    """(prediction type, loaded denoiser, the U-Net as diffusers loads it) of a tiny saved DDPM pipeline."""
    folder = tmp_path_factory.mktemp(request.param)
    scheduler = diffusers.DDPMScheduler(prediction_type=request.param)
    diffusers.DDPMPipeline(unet=tiny_unet(), scheduler=scheduler).save_pretrained(folder)
    return request.param, load_model(f"diffusers:{folder}"), diffusers.UNet2DModel.from_pretrained(folder / "unet")


@pytest.fixture(scope="module")
def epsilon_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eps")
    diffusers.DDPMPipeline(unet=tiny_unet(), scheduler=diffusers.DDPMScheduler()).save_pretrained(folder)
    return load_model(f"diffusers:{folder}")


def test_wrapper_equals_scheduler_x0_at_training_timesteps(saved):
    prediction_type, model, unet = saved
    scheduler = ddim(prediction_type)
    scheduler.set_timesteps(STEPS)
    assert model.sample_shape == (1, 8, 8) and model.prediction_type == prediction_type
    x0 = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    for k in (0, 17, 500, 999):
        sigma = float(model.discrete_sigmas[k])
        abar = scheduler.alphas_cumprod[k].double()
        assert sigma == pytest.approx(((1 - abar) / abar).sqrt().item(), rel=1e-12)
        x = x0 + sigma * torch.randn(x0.shape, generator=torch.Generator().manual_seed(k))
        x_vp = (x / (1 + sigma**2) ** 0.5).float()
        with torch.no_grad():
            out = unet(x_vp, k).sample
        want = scheduler.step(out, k, x_vp).pred_original_sample
        got = model(x, sigma)
        # float32 network and conversions: agreement to a few float32 ulps of the largest term
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, sigma)), (k, (got - want).abs().max())


def test_bare_unet_folder_with_scheduler_config(tmp_path):
    tiny_unet().save_pretrained(tmp_path)
    diffusers.DDPMScheduler(prediction_type="v_prediction", beta_schedule="squaredcos_cap_v2").save_config(tmp_path)
    model = load_model(f"diffusers:{tmp_path}")
    assert model.prediction_type == "v_prediction"
    assert model.sigma_max == pytest.approx(float(model.discrete_sigmas[-1])) and model.sigma_max > 100


def test_timestep_interpolation_between_training_timesteps(epsilon_model):
    model = copy.deepcopy(epsilon_model)
    table = model.discrete_sigmas
    seen = []
    model.unet.register_forward_pre_hook(lambda module, args: seen.append(args[1].clone()))
    k, w = 300, 0.25
    sigma = float(torch.exp((1 - w) * table[k].log() + w * table[k + 1].log()))
    x = torch.randn(2, 1, 8, 8)
    got = model(x, sigma)
    assert seen[-1].dtype == torch.float32
    assert torch.allclose(seen[-1], torch.full((2,), k + w), atol=1e-4)  # float32 timestep resolution near 300
    assert float(sigma_of_timestep(table, torch.tensor(k + w, dtype=torch.float64))) == pytest.approx(sigma, rel=1e-12)
    assert float(timestep_of_sigma(table, torch.tensor(sigma, dtype=torch.float64))) == pytest.approx(k + w, rel=1e-12)
    # the network really sees the fractional timestep: D differs from both neighbours
    assert not torch.allclose(got, model(x, float(table[k]) * (1 + 1e-12)), atol=1e-7)
    # outside the table, sigmas clamp to the end timesteps
    assert timestep_of_sigma(table, torch.tensor([1e-6, 1e6], dtype=torch.float64)).tolist() == [0.0, 999.0]


def test_predictions_agree_on_the_same_x0():
    """One exact x0 fed as each prediction type's ideal output gives the same D (eps, x0, v identities)."""
    from diffsampler.models.discrete_vp import x0_from_output

    x0 = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    eps = torch.randn_like(x0)
    sigma = torch.tensor([0.01, 0.5, 3.0, 150.0], dtype=torch.float64)
    s = sigma.view(-1, 1, 1, 1)
    x = x0 + s * eps
    v = (eps - s * x0) / (1 + s**2).sqrt()  # v = alpha eps - sigma_vp x0 with alpha = 1/sqrt(1+s^2)
    for kind, out in (("epsilon", eps), ("sample", x0), ("v_prediction", v)):
        assert torch.allclose(x0_from_output(out, x, sigma, kind), x0, rtol=1e-12, atol=1e-10), kind


def test_discrete_schedule_reproduces_the_model_timesteps(epsilon_model):
    model = epsilon_model
    table = model.discrete_sigmas
    for spacing, sigma_min in (("linspace", model.sigma_min), ("trailing", float(table[99]))):
        scheduler = ddim("epsilon", spacing)
        scheduler.set_timesteps(STEPS)
        grid = get_sigmas("discrete", STEPS - 1, sigma_min, model.sigma_max, discrete_sigmas=table)
        assert torch.equal(grid, table[scheduler.timesteps]), spacing
        assert torch.equal(timestep_of_sigma(table, grid), scheduler.timesteps.double()), spacing
    quadratic = get_sigmas(
        "discrete", 5, model.sigma_min, model.sigma_max, rho=2.0, discrete_sigmas=model.discrete_sigmas
    )
    assert quadratic[0] == model.sigma_max and quadratic[-1] == model.sigma_min  # rho != 1 keeps both ends
    with pytest.raises(UserError, match="too few"):
        get_sigmas(
            "discrete", 20, float(model.discrete_sigmas[990]), model.sigma_max, discrete_sigmas=model.discrete_sigmas
        )
    with pytest.raises(UserError, match="discrete training timesteps"):
        get_sigmas("discrete", 5, 0.01, 80.0)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-6), (torch.float32, 1e-5)])
def test_euler_on_discrete_grid_equals_diffusers_ddim(saved, dtype, tol):
    """Our Euler on the discrete grid sigma(999), sigma(899), ..., sigma(99) plus denoise_to_zero equals DDIM.

    Convention: DDIMScheduler(eta = 0, 'trailing' timesteps 999, 899, ..., 99, set_alpha_to_one) on the
    same network and noise; its state is x_vp = x / sqrt(1 + sigma^2); its 10 steps are our 9 grid
    intervals and the final step to abar = 1 (sigma = 0), which for Euler is x = D(x, sigma(99)).
    float64 isolates the algebra: what remains is diffusers taking sqrt(abar) of its float32 table in
    float32 (~6e-8 relative per coefficient, over 10 steps), hence 1e-6. float32: the issue's 1e-5.
    """
    prediction_type, model, unet = saved
    model, unet = copy.deepcopy(model).to(dtype), copy.deepcopy(unet).to(dtype)
    scheduler = ddim(prediction_type)
    scheduler.set_timesteps(STEPS)
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=dtype)
    x_vp = noise.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            x_vp = scheduler.step(unet(x_vp, t).sample, t, x_vp, eta=0.0).prev_sample
    grid = get_sigmas(
        "discrete", STEPS - 1, float(model.discrete_sigmas[99]), model.sigma_max, discrete_sigmas=model.discrete_sigmas
    )
    model.reset_calls()
    with torch.no_grad():
        ours = get_solver("euler").sample(
            model, noise * (1 + grid[0] ** 2).sqrt().to(dtype), grid, {"denoise_to_zero": True}
        )
    assert model.calls == STEPS
    rel = ((ours - x_vp).norm() / x_vp.norm()).item()
    assert rel < tol, rel


def tiny_latent(guidance: float) -> LatentDiffusionDenoiser:
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=4,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8,
        attention_head_dim=2,
    )
    vae = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 8),
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )
    scheduler = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    cond, uncond = torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    return LatentDiffusionDenoiser(unet, vae, scheduler.alphas_cumprod, "epsilon", cond, uncond, guidance)


def test_guided_latent_model_is_one_batched_call():
    model = tiny_latent(guidance=3.0)
    unet_calls = []
    model.unet.register_forward_pre_hook(lambda module, args: unet_calls.append(args[0].shape[0]))
    x = torch.randn(2, 4, 4, 4)
    sigma = 2.0
    got = model(x, sigma)
    assert model.calls == 1 and unet_calls == [4]  # one NFE: cond and uncond stacked in one network call
    x_in = x / (1 + sigma**2) ** 0.5
    t = model.timestep(torch.tensor([sigma], dtype=torch.float64)).float().expand(2)
    with torch.no_grad():
        eps_c = model.unet(x_in, t, encoder_hidden_states=model.cond_embedding.expand(2, -1, -1)).sample
        eps_u = model.unet(x_in, t, encoder_hidden_states=model.uncond_embedding.expand(2, -1, -1)).sample
    want = x - sigma * (eps_u + 3.0 * (eps_c - eps_u))
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()  # batched vs separate float32 calls
    model.guidance = 1.0
    conditional = x - sigma * eps_c
    assert torch.allclose(model(x, sigma), conditional, atol=1e-5)
    assert model.calls == 2 and unet_calls[-1] == 2  # scale 1 needs no unconditional half
    images = model.decode(got)
    assert images.shape == (2, 3, 8, 8) and images.abs().max() <= 1


def write_text_pipeline(folder) -> None:
    """A tiny Stable-Diffusion-style folder: conditional U-Net, VAE, CLIP text encoder and tokenizer."""
    transformers = pytest.importorskip("transformers")
    model = tiny_latent(guidance=1.0)
    vocab = {
        "<|startoftext|>": 0,
        "<|endoftext|>": 1,
        "a</w>": 2,
        "c": 3,
        "a": 4,
        "t</w>": 5,
        "at</w>": 6,
        "cat</w>": 7,
    }
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\na t</w>\nc at</w>\n")
    tokenizer = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=5)
    config = transformers.CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=5,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    pipeline = diffusers.StableDiffusionPipeline(
        unet=model.unet,
        vae=model.vae,
        text_encoder=transformers.CLIPTextModel(config),
        tokenizer=tokenizer,
        scheduler=diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder / "sd")


def test_text_pipeline_through_the_cli(tmp_path):
    from typer.testing import CliRunner

    from diffsampler.cli import app

    write_text_pipeline(tmp_path)
    args = [
        "sample",
        "--model",
        f"diffusers:{tmp_path / 'sd'}",
        "--solver",
        "euler",
        "--schedule",
        "discrete",
        "--nfe",
        "3",
        "--num-samples",
        "2",
        "--out",
        str(tmp_path / "out"),
        "--name",
        "run",
        "--model-option",
        "prompt=a cat",
        "--model-option",
        "guidance=2.5",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    import numpy as np

    data = np.load(tmp_path / "out" / "run" / "samples.npz")
    assert data["latents"].shape == (2, 4, 4, 4) and data["samples"].shape == (2, 3, 8, 8)
    meta = json.loads((tmp_path / "out" / "run" / "meta.json").read_text())
    assert meta["nfe"] == 3 and meta["model"]["guidance"] == 2.5 and meta["schedule"] == "discrete"
    bad = CliRunner().invoke(app, [*args[:-2], "--model-option", "guidanse=2"])
    assert bad.exit_code == 2 and "guidance" in bad.output


def test_pickled_bin_weights_are_refused(tmp_path):
    tiny_unet().save_pretrained(tmp_path, safe_serialization=False)
    diffusers.DDPMScheduler().save_config(tmp_path)
    with pytest.raises(UserError, match="only safetensors weights load") as info:
        load_model(f"diffusers:{tmp_path}")
    assert "\n" not in str(info.value)


def test_hub_id_is_fetched_safetensors_only(tmp_path, monkeypatch):
    """No network here: the hub client is replaced by one that serves a local folder (or fails)."""
    import huggingface_hub

    tiny_unet().save_pretrained(tmp_path)
    diffusers.DDPMScheduler().save_config(tmp_path)
    asked = []

    def fake_download(repo_id, allow_patterns=None, **kwargs):
        asked.append((repo_id, allow_patterns))
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    model = load_model("diffusers:someone/tiny-ddpm")
    assert model.sample_shape == (1, 8, 8)
    assert asked[0][0] == "someone/tiny-ddpm" and not any(p.endswith(".bin") or p == "*" for p in asked[0][1])

    def offline(repo_id, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("cannot reach the hub\nsecond line")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(
        UserError,
        match=r"tiny-ddpm' is no local folder.*LocalEntryNotFoundError: cannot reach the hub second line\); check",
    ) as info:
        load_model("diffusers:someone/tiny-ddpm")
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="folder not found"):
        load_model(f"diffusers:{tmp_path / 'missing' / 'deeper' / 'x'}")


def test_list_shows_the_loader_kinds():
    from typer.testing import CliRunner

    from diffsampler.cli import app

    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0
    assert "diffusers:PATH" in result.output and "edm:PATH" in result.output
