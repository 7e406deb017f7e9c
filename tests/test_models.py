"""Behaviour of the three GP classifiers: shapes, modes, pooling variants, input checks."""
import math

import pytest
import torch

from gpcore.models import GPClassifier, create_model, list_models
from gpcore.models.registry import model_class
from helpers import VARIANTS, small_model, variant_id

# the GP classifiers (the registry also holds the MProtoNet baselines, tested elsewhere)
GP_MODELS = [n for n in list_models() if issubclass(model_class(n), GPClassifier)]

SIZES = [(48, 40), (40, 48), (32, 32)]
ODD_SIZES = [(45, 37), (33, 50)]  # only the sinc/bilinear U-Net and sinc ReconResNet allow them


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("pool", ["features", "heatmap"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_output_shapes(variant, size, pool, training):
    name, cfg = variant
    model = small_model(name, pool=pool, **cfg).train(training)
    x = torch.randn(2, 4, *size)
    logits = model(x)
    assert logits.shape == (2, 3)
    logits2, heatmap = model.forward_with_heatmap(x)
    assert logits2.shape == (2, 3)
    assert heatmap.shape == (2, 3, *size)
    assert torch.isfinite(heatmap).all()


@pytest.mark.parametrize("variant", [("gp_unet", {"up_mode": "sinc"}),
                                     ("gp_unet", {"up_mode": "upconv"}),
                                     ("gp_recon_resnet", {"up_mode": "sinc"})], ids=variant_id)
@pytest.mark.parametrize("size", ODD_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_odd_sizes_give_heatmaps_at_input_resolution(variant, size):
    model = small_model(variant[0], **variant[1]).eval()
    _, heatmap = model.forward_with_heatmap(torch.randn(1, 4, *size))
    assert heatmap.shape == (1, 3, *size)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_eval_logits_agree_between_the_two_calls_and_gradients_flow(variant):
    model = small_model(variant[0], **variant[1]).eval()
    x = torch.randn(2, 4, 32, 40, requires_grad=True)
    logits_only = model(x)
    logits, heatmap = model.forward_with_heatmap(x)
    torch.testing.assert_close(logits_only, logits, rtol=0, atol=0)
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", GP_MODELS)
def test_heatmap_pooling_gives_logits_equal_to_pooled_heatmaps(name):
    model = small_model(name, pool="heatmap", heatmap_pool="max").eval()
    logits, heatmap = model.forward_with_heatmap(torch.randn(3, 4, 32, 40))
    assert torch.equal(logits, heatmap.amax(dim=(2, 3)))

    r = 3.0
    model = small_model(name, pool="heatmap", heatmap_pool="lse", lse_r=r).eval()
    logits, heatmap = model.forward_with_heatmap(torch.randn(3, 4, 32, 40))
    flat = heatmap.flatten(2).double()
    lse = (torch.logsumexp(r * flat, 2) - math.log(flat.shape[2])) / r
    # float32 model output against a float64 reference: tolerance at float32 resolution of
    # the heatmap's magnitude (r·h enters the exponent)
    scale = max(1.0, float(heatmap.detach().abs().max()))
    torch.testing.assert_close(logits.double(), lse, rtol=1e-5, atol=1e-5 * scale)
    assert (logits <= heatmap.amax(dim=(2, 3)) + 1e-6).all()  # LSE lies below the max
    assert (logits >= heatmap.mean(dim=(2, 3)) - 1e-6).all()  # ... and above the mean

    model = small_model(name, pool="heatmap", heatmap_pool="topk", topk_fraction=0.1).eval()
    logits, heatmap = model.forward_with_heatmap(torch.randn(3, 4, 32, 40))
    k = 128  # ceil(0.1 * 32 * 40)
    want = heatmap.flatten(2).sort(dim=2, descending=True).values[..., :k].mean(2)
    torch.testing.assert_close(logits, want)
    with pytest.raises(ValueError, match="topk_fraction"):
        small_model(name, pool="heatmap", heatmap_pool="topk", topk_fraction=0.0)


@pytest.mark.parametrize("name", GP_MODELS)
def test_published_pooling_is_feature_max_before_the_head(name):
    model = small_model(name).eval()
    x = torch.randn(2, 4, 32, 40)
    logits, heatmap = model.forward_with_heatmap(x)
    feats = model.features(x)
    want = model.head(feats.amax(dim=(2, 3), keepdim=True)).flatten(1)
    torch.testing.assert_close(logits, want)
    torch.testing.assert_close(heatmap, model.head(feats))
    # the CAM projection's peak is not the logit in general (the reason for pool="heatmap")
    assert not torch.allclose(logits, heatmap.amax(dim=(2, 3)))


@pytest.mark.parametrize("name", GP_MODELS)
@pytest.mark.parametrize("pool", ["features", "heatmap"])
def test_background_class_is_the_head_bias_and_only_tumour_maps_are_pooled(name, pool):
    torch.manual_seed(0)
    plain = small_model(name, pool=pool).eval()
    torch.manual_seed(0)
    bg = small_model(name, pool=pool, background_class=0).eval()
    assert plain.state_dict().keys() == bg.state_dict().keys()
    x = torch.randn(2, 4, 32, 40, requires_grad=True)
    want_logits, want_maps = plain.forward_with_heatmap(x)
    logits, maps = bg.forward_with_heatmap(x)
    b = bg.head.bias[0]
    torch.testing.assert_close(logits[:, 1:], want_logits[:, 1:])  # tumour classes unchanged
    torch.testing.assert_close(maps[:, 1:], want_maps[:, 1:])
    torch.testing.assert_close(logits[:, 0], b.expand(2))           # background: the bias
    torch.testing.assert_close(maps[:, 0], b.expand(2, 32, 40))
    logits.sum().backward()
    w = bg.head.weight.grad
    assert w[0].abs().sum() == 0 and w[1:].abs().sum() > 0  # no gradient to the unused row
    assert bg.head.bias.grad[0] != 0
    with pytest.raises(ValueError, match="background_class"):
        small_model(name, background_class=-1)


@pytest.mark.parametrize("name", GP_MODELS)
@pytest.mark.parametrize("pool", ["features", "heatmap"])
def test_brain_pooling_ignores_the_zero_background(name, pool):
    model = small_model(name, pool=pool, pool_region="brain").eval()
    x = torch.zeros(2, 4, 32, 40)
    x[:, :, 6:26, 8:30] = torch.rand(2, 4, 20, 22) + 0.1
    logits, heatmap = model.forward_with_heatmap(x)
    inside = heatmap[:, :, 6:26, 8:30]
    if pool == "heatmap":  # the logit is the peak over brain pixels only
        torch.testing.assert_close(logits, inside.amax(dim=(2, 3)))
    else:
        feats = model.features(x)[:, :, 6:26, 8:30]
        want = model.head(feats.amax(dim=(2, 3), keepdim=True)).flatten(1)
        torch.testing.assert_close(logits, want)
    # outside the brain the map takes no part in the decision: it shows the least evidence
    # inside, so explanations (AP, deletion) do not read values the logit never saw
    outside = torch.ones(32, 40, dtype=torch.bool)
    outside[6:26, 8:30] = False
    low = inside.amin(dim=(2, 3))
    torch.testing.assert_close(heatmap[:, :, outside], low[:, :, None].expand(-1, -1,
                                                                             int(outside.sum())))
    # a slice without any non-zero pixel is pooled over the whole image
    blank = torch.zeros(1, 4, 32, 40)
    same = small_model(name, pool=pool).eval()
    same.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(blank), same(blank))


@pytest.mark.parametrize("out_act", ["sigmoid", "softmax", "relu", "tanh"])
def test_out_act_applies_to_both_outputs_and_keeps_keys(out_act):
    plain = small_model("gp_unet").eval()
    act = small_model("gp_unet", out_act=out_act).eval()
    assert list(act.state_dict()) == list(plain.state_dict())
    act.load_state_dict(plain.state_dict())
    x = torch.randn(2, 4, 32, 32)
    raw_logits, raw_heatmap = plain.forward_with_heatmap(x)
    logits, heatmap = act.forward_with_heatmap(x)
    fn = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh,
          "softmax": lambda t: torch.softmax(t, dim=1)}[out_act]
    torch.testing.assert_close(logits, fn(raw_logits))
    torch.testing.assert_close(heatmap, fn(raw_heatmap))


def test_reference_spelling_of_no_activation_is_accepted():
    assert small_model("gp_shuffle_unet", out_act="None").out_act is None


def test_dropout_is_active_in_training_only():
    model = small_model("gp_unet", dropout=0.5)
    x = torch.randn(2, 4, 32, 32)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name, option", [("gp_unet", "dropout"),
                                          ("gp_shuffle_unet", "dropout"),
                                          ("gp_recon_resnet", "res_drop_prob")])
def test_dropout_must_be_a_probability_below_one(name, option):
    with pytest.raises(TypeError, match="booleans are rejected"):
        small_model(name, **{option: True})
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        small_model(name, **{option: 1.0})
    assert small_model(name, **{option: 0.0}) is not None


def test_input_size_errors_are_clear():
    with pytest.raises(ValueError, match="GP-ShuffleUNet needs H and W divisible by 8, "
                                         "got 250×240"):
        small_model("gp_shuffle_unet")(torch.randn(1, 4, 250, 240))
    with pytest.raises(ValueError, match="divisible by 4, got 45×40"):
        small_model("gp_recon_resnet", up_mode="upconv")(torch.randn(1, 4, 45, 40))
    with pytest.raises(ValueError, match="needs H and W >= 4, got 3×8"):
        small_model("gp_unet")(torch.randn(1, 4, 3, 8))
    with pytest.raises(ValueError, match="got 4×9"):
        small_model("gp_recon_resnet")(torch.randn(1, 4, 4, 9))
    with pytest.raises(ValueError, match="4 input contrasts, got 3 channels"):
        small_model("gp_unet")(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        small_model("gp_unet")(torch.randn(4, 32, 32))


def test_registry_errors_name_the_alternatives():
    with pytest.raises(KeyError, match="Did you mean 'gp_unet'"):
        create_model("gp_unte")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['up_algo'\]"):
        create_model("gp_unet", up_algo="sinc")
    with pytest.raises(ValueError, match="pool must be one of"):
        create_model("gp_unet", pool="mean")


@pytest.mark.parametrize("name", GP_MODELS)
def test_construction_and_forward_are_deterministic_under_a_seed(name):
    torch.manual_seed(1701)
    a = small_model(name)
    torch.manual_seed(1701)
    b = small_model(name)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    x = torch.randn(2, 4, 32, 32)
    torch.manual_seed(7)
    out_a = a.train()(x)
    torch.manual_seed(7)
    out_b = b.train()(x)
    assert torch.equal(out_a, out_b)  # same dropout masks under the same seed


def test_models_share_the_gp_base_and_record_their_config():
    for name in GP_MODELS:
        model = small_model(name)
        assert isinstance(model, GPClassifier) and model.model_name == name
        rebuilt = create_model(name, **model.config)
        assert rebuilt.config == model.config
