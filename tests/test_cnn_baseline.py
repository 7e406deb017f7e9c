"""The CNN + Grad-CAM baseline: shapes, Grad-CAM equal to Captum's, inference mode, training."""
import pandas as pd
import pytest
import torch

from gpcore.models import create_model, read_checkpoint_meta
from gpcore.training import resolve_config, train

SMALL = {"depth": 18, "width": 8, "hidden": 16}


pytestmark = pytest.mark.usefixtures("one_thread")


def small(**kw):
    return create_model("cnn_gradcam", **{**SMALL, **kw})


@pytest.mark.parametrize("size", [48, 64])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_output_shapes(size, training):
    model = small().train(training)
    x = torch.rand(2, 4, size, size)
    assert model(x).shape == (2, 3)
    logits, heatmap = model.forward_with_heatmap(x)
    assert logits.shape == (2, 3) and heatmap.shape == (2, 3, size, size)
    assert (heatmap >= 0).all() and not heatmap.requires_grad


def test_gradcam_layer_is_the_last_conv_of_the_add_on():
    model = small()
    assert model.gradcam_layer is model.add_ons[3]
    with torch.device("meta"):
        paper = create_model("cnn_gradcam")
    assert paper.features.out_channels == 512 and paper.add_ons[0].in_channels == 512
    assert paper.fc.bias is None and paper.fc.in_features == 128


def test_heatmap_equals_captum_layer_gradcam_and_works_in_inference_mode():
    from captum.attr import LayerAttribution, LayerGradCam

    torch.manual_seed(0)
    model = small().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(3, 4, 48, 40)
    want = []
    for c in range(3):
        attr = LayerGradCam(model, model.add_ons[3]).attribute(
            x.clone().requires_grad_(True), target=c, relu_attributions=True)
        want.append(LayerAttribution.interpolate(attr, (48, 40), "bilinear"))
    want = torch.cat(want, 1).detach()
    with torch.inference_mode():
        logits, heatmap = model.forward_with_heatmap(x)
    torch.testing.assert_close(heatmap, want)
    torch.testing.assert_close(logits, model(x))
    assert heatmap.abs().sum() > 0
    with torch.no_grad():
        assert torch.equal(model.forward_with_heatmap(x)[1], heatmap)


def test_config_uses_the_reference_optimiser_and_cross_entropy():
    tc = resolve_config("paper", "cnn_gradcam")["train"]
    assert (tc["optimizer"], tc["lr_schedule"], tc["epochs"], tc["batch_size"]) == \
        ("adamw", "warmup_cosine", 100, 32)
    assert "mprotonet" not in tc
    assert getattr(small(), "objective", "cross_entropy") == "cross_entropy"


def test_training_writes_a_reloadable_checkpoint(tmp_path):
    from fake_data import fake_store

    store, split = fake_store(tmp_path, 8)
    out = train(store, split, tmp_path / "run", model="cnn_gradcam",
                profile="smoke", progress=False, overrides=["train.num_workers=0"])
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics.epoch.tolist() == [1, 2] and "pushed" not in metrics
    assert metrics.lr.iloc[0] == pytest.approx(1e-3)  # warm-up of 1 epoch (20 % of 2, >= 1)
    model = create_model(checkpoint=out / "best.safetensors").eval()
    meta = read_checkpoint_meta(out / "best.safetensors")
    assert meta["model"] == "cnn_gradcam" and meta["extra"]["input_size"] == 16
    rebuilt = create_model("cnn_gradcam", **meta["config"]).eval()
    from safetensors.torch import load_file
    rebuilt.load_state_dict(load_file(out / "best.safetensors"))
    x = torch.rand(2, 4, 16, 16)
    assert torch.equal(model(x), rebuilt(x))
    with torch.inference_mode():
        assert model.forward_with_heatmap(x)[1].shape == (2, 3, 16, 16)
