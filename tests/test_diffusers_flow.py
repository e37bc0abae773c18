"""diffusers flow-matching pipelines (SD3, Flux) as EDM flow denoisers: tiny random-weight pipelines of the real
classes, our Euler on the flow grid against the pipelines' own denoising loops (output_type="latent")."""

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from diffsampler.errors import UserError  # noqa: E402
from diffsampler.models import load_model  # noqa: E402
from diffsampler.sampling import initial_state  # noqa: E402
from diffsampler.schedules import get_sigmas  # noqa: E402
from diffsampler.solvers import get_solver  # noqa: E402

PROMPT = "a cat"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks: one thread avoids OpenMP spin overhead on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def clip_parts(folder, seed, encoder="CLIPTextModelWithProjection"):
    """A tiny CLIP tokenizer (local vocabulary) and text encoder (SD3: with projection; Flux: CLIPTextModel), as
    diffusers' pipeline tests build them."""
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
    torch.manual_seed(seed)
    config = transformers.CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=5,
        projection_dim=8,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return tokenizer, getattr(transformers, encoder)(config)


def tiny_vae(latent_channels):
    torch.manual_seed(1)
    return diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=(8, 8),
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        shift_factor=0.06,
        scaling_factor=1.5,
    )


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory):
    """A tiny SD3 pipeline (two CLIP encoders, no T5: SD3 then uses zero T5 embeddings), shift 3, saved."""
    folder = tmp_path_factory.mktemp("sd3")
    tokenizer, encoder = clip_parts(folder, 2)
    _, encoder_2 = clip_parts(folder, 3)
    torch.manual_seed(0)
    transformer = diffusers.SD3Transformer2DModel(
        sample_size=8,
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        caption_projection_dim=16,
        pooled_projection_dim=16,
    )
    pipeline = diffusers.StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_vae(4),
        text_encoder=encoder,
        tokenizer=tokenizer,
        text_encoder_2=encoder_2,
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipeline.save_pretrained(folder / "pipe")
    return folder / "pipe"


def t5_parts(seed):
    """A tiny T5 tokenizer (a Unigram vocabulary, no download) and encoder."""
    pieces = ["<pad>", "</s>", "<unk>", "\u2581a", "\u2581cat", "\u2581", "a", "c", "t"]
    tokenizer = transformers.T5TokenizerFast(vocab=[(p, -float(i > 2)) for i, p in enumerate(pieces)], extra_ids=0)
    torch.manual_seed(seed)
    config = transformers.T5Config(
        vocab_size=len(pieces), d_model=16, d_kv=4, d_ff=16, num_layers=1, num_heads=2, decoder_start_token_id=0
    )
    return tokenizer, transformers.T5EncoderModel(config)


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory):
    """A tiny Flux pipeline (CLIP + T5, guidance embedding, dynamic shifting as Flux.1-dev's scheduler), saved."""
    folder = tmp_path_factory.mktemp("flux")
    tokenizer, encoder = clip_parts(folder, 4, "CLIPTextModel")
    tokenizer_2, encoder_2 = t5_parts(5)
    torch.manual_seed(0)
    transformer = diffusers.FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        pooled_projection_dim=8,
        guidance_embeds=True,
        axes_dims_rope=(2, 2, 4),
    )
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15
    )
    pipeline = diffusers.FluxPipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=tiny_vae(1),
        text_encoder=encoder,
        tokenizer=tokenizer,
        text_encoder_2=encoder_2,
        tokenizer_2=tokenizer_2,
    )
    pipeline.save_pretrained(folder / "pipe")
    return folder / "pipe"


def noise(shape):
    return torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))


def ours(model, nfe):
    grid = get_sigmas("flow", nfe, model.sigma_min, model.sigma_max, flow_grid=model.flow_grid)
    with torch.no_grad():
        return get_solver("euler").sample(model, initial_state(noise(model.sample_shape), float(grid[0])), grid)


@pytest.mark.parametrize("guidance", [1.0, 4.0])
@pytest.mark.parametrize("nfe", [5, 8])
def test_sd3_euler_equals_the_pipeline_loop(sd3_folder, guidance, nfe):
    """Euler on the flow grid (shift 3 from the scheduler config) = StableDiffusion3Pipeline's loop on the same
    latents, prompt and CFG scale; float32 network: the issue's 1e-5."""
    model = load_model(
        f"diffusers:{sd3_folder}", options={"prompt": PROMPT, "guidance": guidance, "height": 16, "width": 16}
    )
    assert model.sample_shape == (4, 8, 8) and model.flow_grid.shift == 3.0 and model.time.scale == 1000.0
    pipeline = diffusers.StableDiffusion3Pipeline.from_pretrained(sd3_folder, text_encoder_3=None, tokenizer_3=None)
    with torch.no_grad():
        want = pipeline(
            PROMPT,
            negative_prompt="",
            num_inference_steps=nfe,
            num_images_per_prompt=2,
            guidance_scale=guidance,
            latents=noise(model.sample_shape),
            output_type="latent",
            height=16,
            width=16,
        ).images
    model.reset_calls()
    got = ours(model, nfe)
    assert model.calls == nfe
    err = ((got - want).norm() / want.norm()).item()
    assert err < 1e-5, err
    images = model.decode(got)
    assert images.shape == (2, 3, 16, 16)


@pytest.mark.parametrize("nfe", [5, 8])
def test_flux_euler_equals_the_pipeline_loop(flux_folder, nfe):
    """Euler on Flux's grid (linspace(1, 1/N, N) with shift exp(mu), mu for 16 tokens) = FluxPipeline's loop on the
    same (packed) latents, prompt and embedded guidance 3.5; float32 network: the issue's 1e-5."""
    from diffsampler.models.diffusers_flow import pack, unpack

    model = load_model(f"diffusers:{flux_folder}", options={"prompt": PROMPT, "height": 16, "width": 16})
    assert model.sample_shape == (1, 8, 8) and model.flow_grid.dynamic and model.time.scale == 1.0
    pipeline = diffusers.FluxPipeline.from_pretrained(flux_folder)
    with torch.no_grad():
        want = pipeline(
            PROMPT,
            num_inference_steps=nfe,
            num_images_per_prompt=2,
            guidance_scale=3.5,
            latents=pack(noise(model.sample_shape)),
            output_type="latent",
            height=16,
            width=16,
        ).images
    want = unpack(want, *model.sample_shape)
    model.reset_calls()
    got = ours(model, nfe)
    assert model.calls == nfe
    err = ((got - want).norm() / want.norm()).item()
    assert err < 1e-5, err
    assert torch.equal(unpack(pack(got), *model.sample_shape), got)


@pytest.mark.parametrize("which", ["sd3", "flux"])
@pytest.mark.parametrize(
    "name, scheduler_class", [("dpmpp", "DPMSolverMultistepScheduler"), ("unipc", "UniPCMultistepScheduler")]
)
@pytest.mark.parametrize("nfe", [5, 8])
def test_multistep_on_the_pipelines_equals_diffusers_flow_schedulers(request, which, name, scheduler_class, nfe):
    """dpmpp (2M) and unipc (order 2) = DPMSolverMultistepScheduler / UniPCMultistepScheduler (use_flow_sigmas,
    flow_prediction, the model's shift) driving the same network (CFG 4 for SD3, embedded guidance for Flux) on their
    grid and latents. The loop is ours around the scheduler: the pipelines would give the network DPM's integer
    timesteps, not the grid's t. float32: the issue's 1e-5."""
    folder = request.getfixturevalue(f"{which}_folder")
    model = load_model(
        f"diffusers:{folder}",
        options={"prompt": PROMPT, "height": 16, "width": 16, **({"guidance": 4.0} if which == "sd3" else {})},
    )
    scheduler = getattr(diffusers, scheduler_class)(
        use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=model.flow_grid.shift, solver_order=2
    )
    scheduler.set_timesteps(nfe)
    x = noise(model.sample_shape)
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            time = (model.time.scale * scheduler.sigmas[i]).expand(x.shape[0])
            x = scheduler.step(model.velocity(x, time, None), t, x).prev_sample
        t_grid = scheduler.sigmas.double()
        model.reset_calls()
        got = get_solver(name).sample(
            model, noise(model.sample_shape) / float(1 - t_grid[0]), t_grid / (1 - t_grid), {"order": 2}
        )
    assert model.calls == nfe
    err = ((got - x).norm() / x.norm()).item()
    assert err < 1e-5, err


def test_bad_flow_pipelines(sd3_folder, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(sd3_folder, bad)
    config_path = bad / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "_class_name": "FlowMatchHeunDiscreteScheduler"}))
    with pytest.raises(UserError, match="flow-matching pipelines need FlowMatchEulerDiscreteScheduler"):
        load_model(f"diffusers:{bad}")
    config_path.write_text(json.dumps({**config, "shift": 0.0}))
    with pytest.raises(UserError, match="shift must be a positive number"):
        load_model(f"diffusers:{bad}")
    config_path.write_text(json.dumps({**config, "shift_terminal": 0.1}))
    with pytest.raises(UserError, match="shift_terminal"):
        load_model(f"diffusers:{bad}")
    config_path.write_text(json.dumps(config))
    index = json.loads((bad / "model_index.json").read_text())
    (bad / "model_index.json").write_text(json.dumps({**index, "transformer": ["diffusers", "SanaTransformer2DModel"]}))
    with pytest.raises(UserError, match="no known timestep scale"):
        load_model(f"diffusers:{bad}")
    with pytest.raises(UserError, match="model option"):
        load_model(f"diffusers:{sd3_folder}", options={"guidanse": 2})
