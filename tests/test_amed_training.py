"""AMED distillation on the analytic 2-D mixture: lower error than the untrained predictor and the
same-NFE baselines, deterministic with a fixed seed, checkpoints that round-trip and refuse other setups."""

import json

import pytest
import torch

from diffsampler.amed.checkpoint import load_predictor, save_predictor
from diffsampler.amed.config import AmedTrainConfig
from diffsampler.amed.predictor import AMEDPredictor
from diffsampler.amed.train import train_amed
from diffsampler.config import build_config
from diffsampler.errors import UserError
from diffsampler.models import load_model
from diffsampler.sampling import plan_grid, prepared_options
from diffsampler.schedules import get_sigmas
from diffsampler.solvers import get_solver
from diffsampler.solvers.amed import Student, run_amed

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny tensors here run fastest on one thread (and do not fight other processes for cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(**kw):
    base = dict(
        model="gmm-2d",
        student="amed",
        nfe=3,
        afs=True,
        teacher="heun",
        teacher_m=4,
        num_latents=2048,
        batch_size=64,
        scale_dir=0.1,
        scale_time=0.1,
        device="cpu",
        seed=0,
    )
    return build_config(AmedTrainConfig, {**base, **kw})


@pytest.fixture(scope="module")
def evaluation():
    """512 fresh latents (another generator than training's) and their 256-step Heun solution."""
    model = load_model("gmm-2d")
    z = torch.randn((512, 2), generator=torch.Generator().manual_seed(12345)) * SIGMA_MAX
    ref = get_solver("heun").sample(model, z, get_sigmas("polynomial", 256, SIGMA_MIN, SIGMA_MAX))
    return model, z, ref


def _error(y, ref):
    return float((y - ref).norm(dim=1).mean())


# Error ratios (trained / other) observed with seed 0 on this CPU; each test allows half the observed
# margin, i.e. asserts trained / other < (1 + observed) / 2.
OBSERVED = {
    ("amed", 3): {"untrained": 0.25, "dpm2": 0.21, "heun": 0.40},
    ("amed", 5): {"untrained": 0.14, "dpm2": 0.22, "heun": 0.06},
    ("ipndm", 3): {"untrained": 0.36, "ipndm": 0.16},
    ("ipndm", 5): {"untrained": 0.16, "ipndm": 0.54},
}


@pytest.mark.parametrize("student, nfe", sorted(OBSERVED))
def test_training_beats_untrained_predictor_and_baselines(evaluation, student, nfe):
    model, z, ref = evaluation
    cfg = _config(student=student, nfe=nfe)
    result = train_amed(cfg)
    steps = (nfe + 1) // 2
    grid = get_sigmas("polynomial", steps, SIGMA_MIN, SIGMA_MAX)
    assert result.meta["sigmas"] == grid.tolist() and result.meta["nfe"] == nfe

    def amed_error(predictor):
        model.reset_calls()
        with torch.no_grad():
            out = run_amed(model, z, grid.tolist(), predictor, Student(student, afs=True))
        assert model.calls == nfe
        return _error(out, ref)

    trained = amed_error(result.predictor)
    others = {"untrained": amed_error(AMEDPredictor(result.predictor.config, seed=cfg.run.seed))}
    if student == "amed":
        for name in ("dpm2", "heun"):
            others[name] = _error(get_solver(name).sample(model, z, grid, {"afs": True}), ref)
    else:
        # iPNDM with AFS at the same NFE: nfe + 1 steps, the first one free.
        others["ipndm"] = _error(
            get_solver("ipndm").sample(
                model, z, get_sigmas("polynomial", nfe + 1, SIGMA_MIN, SIGMA_MAX), {"afs": True}
            ),
            ref,
        )
    for name, observed in OBSERVED[(student, nfe)].items():
        assert trained / others[name] < (1 + observed) / 2, (name, trained, others[name])


@pytest.fixture(scope="module")
def small_run():
    return train_amed(_config(student="ipndm", nfe=3, num_latents=256, teacher_m=1))


def test_training_is_deterministic_with_a_fixed_seed(small_run):
    again = train_amed(_config(student="ipndm", nfe=3, num_latents=256, teacher_m=1))
    assert again.losses == small_run.losses
    for (k, a), (_, b) in zip(small_run.predictor.state_dict().items(), again.predictor.state_dict().items()):
        assert torch.equal(a, b), k
    other = train_amed(_config(student="ipndm", nfe=3, num_latents=256, teacher_m=1, seed=1))
    assert other.losses != small_run.losses


def test_checkpoint_round_trip(tmp_path, small_run):
    path = tmp_path / "p.pt"
    save_predictor(path, small_run.predictor, small_run.meta)
    ckpt = load_predictor(path)
    assert ckpt.meta == small_run.meta
    assert ckpt.predictor.config == small_run.predictor.config
    for (k, a), (_, b) in zip(small_run.predictor.state_dict().items(), ckpt.predictor.state_dict().items()):
        assert torch.equal(a, b), k
    meta = ckpt.meta
    assert meta["model"]["sha256"] == load_model("gmm-2d").describe()["sha256"]
    assert (meta["solver"], meta["base"], meta["nfe"], meta["schedule"], meta["afs"]) == (
        "amed-plugin",
        "ipndm",
        3,
        "polynomial",
        True,
    )
    assert meta["teacher_m"] == 1 and meta["training_seconds"] > 0 and meta["num_parameters"] == 8971
    x = torch.randn(4, 2) * SIGMA_MAX
    grid = meta["sigmas"]
    with torch.no_grad():
        a = run_amed(load_model("gmm-2d"), x, grid, small_run.predictor, Student("ipndm", afs=True, max_order=4))
        b = get_solver("amed-plugin").sample(
            load_model("gmm-2d"),
            x,
            torch.tensor(grid, dtype=torch.float64),
            {"predictor": load_predictor(path).predictor, "base": "ipndm", "afs": True},
        )
    assert torch.equal(a, b)


def _prepare(path, solver="amed-plugin", model="gmm-2d", nfe=3, schedule=None, sigma_max=SIGMA_MAX, **options):
    spec = get_solver(solver)
    opts = spec.resolve_options({"predictor": str(path), "afs": True, **options})
    denoiser = load_model(model)
    plan = plan_grid(spec, opts, SIGMA_MIN, sigma_max, nfe, schedule)
    return prepared_options(spec, opts, denoiser, plan)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": "gmm-fmnist"}, "trained for model gmm-2d"),
        ({"nfe": 5}, "trained for NFE 3, not 5"),
        ({"solver": "amed"}, "trained for solver amed-plugin -o base=ipndm, not amed"),
        ({"base": "dpmpp"}, "trained for base solver ipndm, not dpmpp"),
        ({"schedule": "logsnr"}, "trained on schedule polynomial, not logsnr"),
        ({"sigma_max": 40.0}, "trained on the sigma grid"),
        ({"nfe": 4, "afs": False}, "trained with afs=true"),
        ({"max_order": 2}, "trained with max_order=4"),
    ],
)
def test_mismatched_predictors_are_refused_in_one_line(tmp_path, small_run, kwargs, message):
    path = tmp_path / "p.pt"
    save_predictor(path, small_run.predictor, small_run.meta)
    with pytest.raises(UserError, match=message) as info:
        _prepare(path, **kwargs)
    assert "\n" not in str(info.value)


def test_matching_predictor_is_loaded_with_its_settings(tmp_path, small_run):
    path = tmp_path / "p.pt"
    save_predictor(path, small_run.predictor, small_run.meta)
    opts = _prepare(path)
    assert isinstance(opts["predictor"], AMEDPredictor)
    assert (opts["base"], opts["max_order"], opts["lower_order_final"]) == ("ipndm", 4, True)


def test_afs_mismatch_and_unreadable_files(tmp_path, small_run):
    meta = {**small_run.meta, "afs": False, "nfe": 4}
    path = tmp_path / "p.pt"
    save_predictor(path, small_run.predictor, meta)
    with pytest.raises(UserError, match="trained with afs=false"):
        _prepare(path, nfe=3)
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    with pytest.raises(UserError, match="not a readable AMED predictor"):
        load_predictor(tmp_path / "bad.pt")
    with pytest.raises(UserError, match="not found"):
        load_predictor(tmp_path / "missing.pt")


def test_train_amed_keeps_a_current_predictor_and_retrains_a_changed_one(tmp_path):
    """A rerun with the same config and model keeps the file (byte for byte); another seed or --fresh trains again;
    a file at that path that is not a predictor of ours is refused, not replaced."""
    from typer.testing import CliRunner

    from diffsampler.cli import app

    runner = CliRunner()
    train = ["train-amed", "--model", "gmm-2d", "--set", "student=euler", "--nfe", "3", "--set", "num_latents=64"]
    train += ["--set", "teacher_m=1", "--device", "cpu", "--out", str(tmp_path), "--name", "p"]
    path = tmp_path / "p.pt"

    def run(*extra: str) -> str:
        result = runner.invoke(app, [*train, *extra])
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())  # the terminal wraps a long temporary path

    assert "predictor for amed" in run()
    first = path.read_bytes()
    assert "already holds" in run() and path.read_bytes() == first
    assert "predictor for amed" in run("--set", "seed=1") and load_predictor(path).meta["config"]["seed"] == 1
    assert "predictor for amed" in run("--set", "seed=1", "--fresh")
    path.write_text("not a checkpoint")  # not ours (issue 37): left alone, in one line
    refused = runner.invoke(app, train)
    assert refused.exit_code == 2 and "is not an AMED predictor written by diffsampler" in refused.output
    assert path.read_text() == "not a checkpoint"


def test_train_amed_and_sample_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from diffsampler.cli import app

    runner = CliRunner()
    train = [
        "train-amed",
        "--model",
        "gmm-2d",
        "--set",
        "student=ipndm",
        "--nfe",
        "3",
        "--set",
        "num_latents=64",
        "--set",
        "teacher_m=1",
    ]
    result = runner.invoke(app, [*train, "--device", "cpu", "--out", str(tmp_path), "--name", "p"])
    assert result.exit_code == 0, result.output
    assert "8,929-parameter predictor for amed-plugin base=ipndm" in result.output
    sample = [
        "sample",
        "--model",
        "gmm-2d",
        "--solver",
        "amed-plugin",
        "--num-samples",
        "8",
        "--out",
        str(tmp_path),
        "-o",
        "afs=true",
    ]
    result = runner.invoke(app, [*sample, "--nfe", "3", "-o", f"predictor={tmp_path / 'p.pt'}"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "gmm-2d-amed-plugin-nfe3" / "meta.json").read_text())["nfe"] == 3
    result = runner.invoke(app, [*sample, "--nfe", "5", "--name", "other", "-o", f"predictor={tmp_path / 'p.pt'}"])
    assert result.exit_code == 2 and "trained for NFE 3, not 5" in result.output
    assert not (tmp_path / "other").exists()
    result = runner.invoke(app, [*train, "--set", "student=ipnmd", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "did you mean 'ipndm'" in result.output


def test_balanced_intervals_descend_the_log_of_each_loss():
    # d log L / dw = (dL/dw) / L: each interval's gradient at unit scale, exactly (a closed form, float64).
    from diffsampler.amed.train import interval_objective

    w = torch.tensor([0.3, -1.2], dtype=torch.float64, requires_grad=True)
    for scale in (1.0, 1e3):  # a 1000x larger loss gives the same balanced gradient
        loss = scale * (w**2).sum()
        (raw,) = torch.autograd.grad(interval_objective(loss, loss.detach(), False), w, retain_graph=True)
        (balanced,) = torch.autograd.grad(interval_objective(loss, loss.detach(), True), w)
        torch.testing.assert_close(raw, scale * 2 * w.detach())
        torch.testing.assert_close(balanced, 2 * w.detach() / (w.detach() ** 2).sum())


def test_balanced_training_changes_the_predictor_and_is_recorded():
    balanced = train_amed(_config(num_latents=64, balance_intervals=True))
    plain = train_amed(_config(num_latents=64))
    assert balanced.meta["config"]["balance_intervals"] is True and plain.meta["config"]["balance_intervals"] is False
    a, b = balanced.predictor.state_dict(), plain.predictor.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
