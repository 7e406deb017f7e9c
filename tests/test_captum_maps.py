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


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_bf16_autocast_path_matches_fp32(variant):
    # the explanation stage's fast path: bf16 autocast + channels-last, float32 logits out
    torch.manual_seed(0)
    model = small_model(variant[0], **variant[1]).eval()
    x = torch.rand(3, 4, 32, 32)
    with torch.no_grad():
        ref = LogitsModel(model)(x)
        fast = LogitsModel(model, torch.bfloat16)(x)
    assert fast.dtype == torch.float32 and fast.shape == ref.shape
    assert torch.allclose(fast, ref, atol=0.05 * float(ref.abs().max()) + 1e-3)
    target = torch.tensor([0, 1, 2])
    occ_ref = occlusion_maps(model, x, target, window=7, stride=4)
    occ_fast = occlusion_maps(model, x, target, window=7, stride=4, autocast=torch.bfloat16)
    # untrained models: occlusion effects are near bf16's resolution of the logits, so this is
    # a loose check (trained quick models: Spearman 0.98-1.0, benchmarks/explain_precision.py)
    r = torch.corrcoef(torch.stack([occ_ref.flatten(), occ_fast.flatten()]))[0, 1]
    assert r > 0.7
    gbp = guided_backprop_maps(model, x, target, autocast=torch.bfloat16)
    assert gbp.dtype == torch.float32 and (gbp >= 0).all()


def test_explain_precision_setting():
    from gpcore.explanations.run import ExplainConfig
    from gpcore.training.fast import auto_default

    assert ExplainConfig(precision="fp32").autocast("cpu") is None
    assert ExplainConfig(precision="bf16").autocast("cpu") == torch.bfloat16
    assert (ExplainConfig().autocast("cpu") == torch.bfloat16) == auto_default("bf16", "cpu")
    with pytest.raises(ValueError, match="precision"):
        ExplainConfig(precision="half").autocast("cpu")
