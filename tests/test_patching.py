"""PDM patching (arXiv 2207.04316): exact rearrangement, documented channel order, shapes and cost."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from diffsampler.errors import UserError
from diffsampler.models.patching import patchify, unpatchify
from diffsampler.models.unet import UNet, UNetConfig

from unet_helpers import one_thread  # noqa: F401  (autouse fixture)


@pytest.mark.parametrize("p", [1, 2, 4])
def test_round_trip_is_exact(p):
    x = torch.randn(3, 3, 16, 16)
    y = patchify(x, p)
    assert y.shape == (3, 3 * p * p, 16 // p, 16 // p)
    assert torch.equal(unpatchify(y, p), x)


def test_channel_order_is_offset_major_colour_minor():
    p, c = 2, 3
    x = torch.randn(1, c, 4, 6)
    y = patchify(x, p)
    for i in range(p):
        for j in range(p):
            for ch in range(c):
                k = (i * p + j) * c + ch
                assert torch.equal(y[0, k], x[0, ch, i::p, j::p])


def test_indivisible_size_is_a_user_error():
    with pytest.raises(UserError, match="divisible"):
        patchify(torch.zeros(1, 1, 10, 10), 4)


def _tiny(p):
    return UNet(
        UNetConfig(
            image_size=16, channels=16, channel_mult=[1, 2], num_blocks=1, attention_resolutions=[], patch_size=p
        )
    )


@pytest.mark.parametrize("p", [1, 2, 4])
def test_patched_network_maps_image_to_image(p):
    net = _tiny(p)
    x = torch.randn(2, 1, 16, 16)
    assert net(x, torch.zeros(2)).shape == x.shape


def test_patched_networks_cost_fewer_flops_at_same_width():
    """FLOPs counted exactly by torch's FlopCounterMode (no timing): the conv levels run on 1/P^2 of the area."""
    x = torch.randn(2, 1, 16, 16)
    flops = {}
    for p in (1, 2, 4):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            _tiny(p)(x, torch.zeros(2))
        flops[p] = counter.get_total_flops()
    assert flops[2] < flops[1] / 3
    assert flops[4] < flops[2] / 3
