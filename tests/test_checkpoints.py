"""Every checkpoint format the project accepts, written by the tests in the authors' layouts."""
import argparse
import json

import pytest
import torch

from gpcore.models import (CheckpointError, create_model, from_reference_kwargs,
                           infer_model_config, load_weights, save_model)
from gpcore.models.reference import parse_reference_call, read_state_dict_listing
from helpers import VARIANTS, small_model, variant_id


def _same_outputs(a, b):
    x = torch.randn(2, 4, 32, 40)
    a.eval(), b.eval()
    with torch.no_grad():
        for ta, tb in zip(a.forward_with_heatmap(x), b.forward_with_heatmap(x)):
            assert torch.equal(ta, tb)


def _wrapped(model, prefix="net."):
    state = {prefix + k: v for k, v in model.state_dict().items()}
    state["loss.weight"] = torch.tensor([0.63720577, 8.99051117, 0.75790886])
    return state


@pytest.fixture
def trained():
    model = small_model("gp_shuffle_unet")  # has BatchNorm buffers and ICNR weights
    with torch.no_grad():
        for buf in model.buffers():
            buf.add_(3)
    return model


def test_hugging_face_pytorch_model_bin(tmp_path, trained):
    path = tmp_path / "pytorch_model.bin"
    torch.save(_wrapped(trained), path)
    _same_outputs(trained, load_weights(small_model("gp_shuffle_unet"), path))


def test_hugging_face_bin_wrapped_in_state_dict(tmp_path, trained):
    path = tmp_path / "pytorch_model.bin"
    torch.save({"state_dict": _wrapped(trained)}, path)
    _same_outputs(trained, load_weights(small_model("gp_shuffle_unet"), path))


def test_lightning_ckpt_with_namespace_hyper_parameters(tmp_path, trained):
    path = tmp_path / "epoch=276-step=62048.ckpt"
    torch.save({
        "epoch": 276, "global_step": 62048, "pytorch-lightning_version": "1.9.4",
        "state_dict": _wrapped(trained),
        "hyper_parameters": argparse.Namespace(network="GP_ShuffleUNet", dropout=True,
                                               out_act="None", normmode=3, lr=1e-3),
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}],
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_score":
                                                                 torch.tensor(0.1)}},
    }, path)
    _same_outputs(trained, load_weights(small_model("gp_shuffle_unet"), path))


def test_plain_state_dict_and_compiled_or_ddp_prefixes(tmp_path, trained):
    for prefix in ("", "module.", "_orig_mod."):
        path = tmp_path / f"plain{prefix}pt"
        torch.save({prefix + k: v for k, v in trained.state_dict().items()}, path)
        _same_outputs(trained, load_weights(small_model("gp_shuffle_unet"), path))


def test_reference_unet_head_with_activation_loads(tmp_path):
    # the reference's GP_UNet(out_act="sigmoid") stored its head as last.0.*
    model = small_model("gp_unet")
    state = {k.replace("last.", "last.0."): v for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "w.pt")
    _same_outputs(model, load_weights(small_model("gp_unet"), tmp_path / "w.pt"))


def test_safetensors_round_trip_rebuilds_the_model_from_its_config(tmp_path):
    model = small_model("gp_recon_resnet", up_mode="upconv", res_drop_prob=0.2)
    path = save_model(model, tmp_path / "run" / "best.safetensors")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["model"] == "gp_recon_resnet" and meta["config"]["up_mode"] == "upconv"
    rebuilt = create_model(checkpoint=path)
    assert rebuilt.config == model.config
    _same_outputs(model, rebuilt)
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.json", "best.safetensors"]


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_foreign_checkpoint_without_config_is_rebuilt_from_its_keys(tmp_path, variant):
    model = small_model(variant[0], **variant[1])
    path = tmp_path / "pytorch_model.bin"
    torch.save(_wrapped(model), path)
    _same_outputs(model, create_model(checkpoint=path))


@pytest.mark.parametrize("listing", ["GP_UNet", "GP_ShuffleUNet", "GP_ReconResNet"])
def test_infers_the_paper_configuration_from_published_listings(shared_dir, listing):
    call, entries = read_state_dict_listing(shared_dir / "reference/state_dicts" / f"{listing}.txt")
    name, cfg = from_reference_kwargs(*parse_reference_call(call))
    guess_name, guess = infer_model_config({k: shape for k, (shape, _) in entries.items()})
    assert guess_name == name
    assert {k: cfg[k] for k in guess} == guess


def test_mismatch_lists_keys_and_suggests_the_matching_config(tmp_path):
    torch.save(_wrapped(small_model("gp_unet", up_mode="upconv")), tmp_path / "w.bin")
    with pytest.raises(CheckpointError) as err:
        load_weights(small_model("gp_unet"), tmp_path / "w.bin")
    text = str(err.value)
    assert "w.bin" in text and "shape mismatches (2)" in text
    assert "up_path.0.up.weight: checkpoint (32, 16, 2, 2) vs model (16, 32, 1, 1)" in text
    assert "up_mode='upconv'" in text

    torch.save(small_model("gp_shuffle_unet").state_dict(), tmp_path / "s.pt")
    with pytest.raises(CheckpointError) as err:
        load_weights(small_model("gp_unet"), tmp_path / "s.pt")
    text = str(err.value)
    assert "missing keys (" in text and "down_path.0.block.0.weight" in text
    assert "unexpected keys (" in text and "… and" in text
    assert "create_model('gp_shuffle_unet'" in text


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # what a malicious checkpoint does: run code when unpickled
        return (open, (self.marker, "w"))


def test_never_unpickles_arbitrary_objects(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": small_model("gp_unet").state_dict(),
                "evil": _Payload(str(marker))}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_weights(small_model("gp_unet"), tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_unreadable_inputs_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        load_weights(small_model("gp_unet"), tmp_path / "nope.bin")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_weights(small_model("gp_unet"), tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="use a .safetensors name"):
        save_model(small_model("gp_unet"), tmp_path / "w.pt")
    with pytest.raises(ValueError, match="needs a model name"):
        create_model()
