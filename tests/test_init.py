import torch
import torch.nn.functional as F

from gpcore.models.gp_shuffle_unet import icnr_
from helpers import small_model


def test_icnr_makes_the_initial_pixel_shuffle_a_nearest_upsampling():
    conv = torch.nn.Conv2d(8, 16, 3, padding=1)
    icnr_(conv)
    x = torch.randn(2, 8, 5, 6)
    shuffled = F.pixel_shuffle(conv(x), 2)
    # one conv output per group of 4 channels, repeated over each 2x2 block
    sub = F.conv2d(x, conv.weight[::4], conv.bias[::4], padding=1)
    torch.testing.assert_close(shuffled, F.interpolate(sub, scale_factor=2, mode="nearest"))


def test_shuffle_unet_icnr_survives_the_generic_init():
    model = small_model("gp_shuffle_unet")  # init="icnr" is the default
    for block in model.pix_shuff:
        w = block.conv.weight
        groups = w.view(w.shape[0] // 4, 4, *w.shape[1:])
        assert torch.equal(groups, groups[:, :1].expand_as(groups))
        assert not block.conv.bias.any()


def test_reference_init_reproduces_the_overwritten_icnr():
    model = small_model("gp_shuffle_unet", init="reference")
    w = model.pix_shuff[0].conv.weight
    assert not torch.equal(w[0], w[1])  # plain Kaiming: no shared sub-kernels
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            assert not m.bias.any()
            # Kaiming normal (fan_in, ReLU gain): std = sqrt(2 / fan_in)
            fan_in = m.weight[0].numel()
            if m.weight.numel() > 2000:
                assert abs(m.weight.std().item() / (2 / fan_in) ** 0.5 - 1) < 0.15
