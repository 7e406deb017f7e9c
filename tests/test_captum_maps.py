import pytest
import torch

from gpcore.explanations.captum_maps import (LogitsModel, guided_backprop_maps,
                                             guided_backprop_note, occlusion_maps)
from helpers import VARIANTS, small_model, variant_id


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_maps_have_slice_shape_for_every_model(variant):
    model = small_model(variant[0], **variant[1])
    x = torch.rand(2, 4, 32, 24)
    target = torch.tensor([1, 2])
    assert occlusion_maps(model, x, target, window=7, stride=4).shape == (2, 32, 24)
    gbp = guided_backprop_maps(model, x, target)
    assert gbp.shape == (2, 32, 24) and (gbp >= 0).all()
    assert not model.training  # Captum saw an eval-mode model


def test_occlusion_finds_the_evidence():
    class Spot(torch.nn.Module):  # class-1 logit = mean intensity of one patch
        def forward(self, x):
            s = x[:, :, 10:14, 10:14].mean(dim=(1, 2, 3))
            return torch.stack([-s, s], 1)

    amap = occlusion_maps(Spot(), torch.ones(1, 2, 24, 24), torch.tensor([1]), window=5,
                          stride=1)[0]
    peak = divmod(int(amap.argmax()), 24)
    assert 8 <= peak[0] <= 15 and 8 <= peak[1] <= 15 and amap[0, 0] == 0


def test_guided_backprop_is_plain_gradient_for_prelu_models_and_guided_for_relu_models():
    x = torch.rand(1, 4, 32, 32)
    target = torch.tensor([2])
    for name, guided in (("gp_recon_resnet", False), ("gp_unet", True),
                         ("gp_shuffle_unet", True)):
        model = small_model(name).eval()
        xg = x.clone().requires_grad_(True)
        LogitsModel(model)(xg)[0, 2].backward()
        plain = xg.grad.abs().sum(1)
        gbp = guided_backprop_maps(model, x, target)
        assert torch.allclose(gbp, plain, atol=1e-6) != guided, name
        assert guided_backprop_note(model).startswith("guided" if guided else "not guided")
