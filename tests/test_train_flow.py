"""`diffsampler train-model` with the flow objective at toy size: the velocity loss falls, the checkpoint loads as a
flow model that samples from t = 1, and the velocity loss is the rectified-flow target."""

import csv

import pytest
import torch
from test_train_model import TINY

from diffsampler.errors import UserError
from diffsampler.models import load_model
from diffsampler.models.unet import UNetConfig
from diffsampler.models.unet_flow import FlowUNetDenoiser
from diffsampler.schedules import get_sigmas
from diffsampler.solvers import get_solver
from diffsampler.train import TrainConfig, train
from diffsampler.train.objective import flow_loss, sample_flow_times

from unet_helpers import one_thread, write_blob_images  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """120 steps of batch 16 on 64 8x8 blob images with the flow objective, euler sample grids from t = 1."""
    data = write_blob_images(tmp_path_factory.mktemp("data") / "blobs.npz")
    torch.set_num_threads(1)
    cfg = TrainConfig(
        name="tiny-flow",
        out=str(tmp_path_factory.mktemp("runs")),
        data=data,
        steps=120,
        log_every=20,
        checkpoint_every=120,
        objective="flow",
        **{**TINY, "grid_solver": "euler"},
    )
    return train(cfg)


def test_flow_loss_falls_and_the_checkpoint_is_a_flow_model(trained):
    """Mean velocity loss over steps 1-20 vs 101-120 (it starts near E||n - x0||^2 ~ 2 for an untrained network);
    a factor 0.8 fails a model that learns nothing."""
    rows = list(csv.DictReader((trained.folder / "loss.csv").open()))
    assert float(rows[-1]["loss"]) < 0.8 * float(rows[0]["loss"]), rows
    model = load_model(str(trained.folder / "model.pt"))
    assert isinstance(model, FlowUNetDenoiser) and model.describe()["prediction"] == "flow"
    grid = get_sigmas("flow", 4, model.sigma_min, model.sigma_max, flow_grid=model.flow_grid)
    with torch.no_grad():
        out = get_solver("dpmpp").sample(model, torch.randn(2, *model.sample_shape), grid)
    assert torch.isfinite(out).all() and model.calls == 4
    assert (trained.folder / "grid-0000120.png").is_file()


def test_flow_loss_is_the_rectified_flow_target():
    """A network returning exactly n - x0 has zero loss; one returning 0 has loss E(n - x0)^2; times lie in (0, 1)."""
    torch.manual_seed(0)
    model = FlowUNetDenoiser(
        UNetConfig(
            image_channels=1,
            image_size=8,
            channels=8,
            channel_mult=[1],
            num_blocks=1,
            attention_resolutions=[],
            head_channels=8,
        )
    )
    x0, noise = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    t = sample_flow_times(4, 0.0, 1.0, torch.Generator().manual_seed(1))
    assert ((t > 0) & (t < 1)).all()
    model.velocity = lambda x_t, time, cond: noise - x0  # type: ignore[method-assign]
    assert flow_loss(model, x0, t, noise).item() == pytest.approx(0.0, abs=1e-12)
    model.velocity = lambda x_t, time, cond: torch.zeros_like(x_t)  # type: ignore[method-assign]
    assert flow_loss(model, x0, t, noise).item() == pytest.approx(((noise - x0) ** 2).mean().item(), rel=1e-6)


def test_flow_training_refuses_a_grid_solver_without_a_t1_start():
    with pytest.raises(UserError, match="heun has no finite first step"):
        TrainConfig(objective="flow", grid_solver="heun", grid_nfe=36).validate()
    with pytest.raises(UserError, match="training objective"):
        TrainConfig(objective="flows").validate()
