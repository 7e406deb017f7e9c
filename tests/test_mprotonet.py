"""MProtoNet-2D (variant C) and its training objective: shapes, hand-computed cases of every
formula of shared/spec/mprotonet.md §2-§4 and §6, push, and training with exact resume."""
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from gpcore.models import create_model, read_checkpoint_meta
from gpcore.models.mprotonet import cosine_distance, soft_mask
from gpcore.models.resnet import resnet_features
from gpcore.training import objectives as obj
from gpcore.training import resolve_config, train
from gpcore.training.engine import warmup_cosine

SMALL = {"depth": 18, "width": 8, "prototype_dim": 16}


pytestmark = pytest.mark.usefixtures("one_thread")


def small(**kw):
    return create_model("mprotonet", **{**SMALL, **kw})


# -- architecture ------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [48, 64])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_output_shapes(size, training):
    model = small().train(training)
    x = torch.rand(2, 4, size, size)
    h = size // 8
    assert model(x).shape == (2, 3)
    out = model.forward_train(x)
    assert out["logits"].shape == (2, 3) and out["distances"].shape == (2, 45)
    assert out["z"].shape == (2, 16, h, h) and out["maps"].shape == (2, 45, h, h)
    assert out["pooled"].shape == (2, 45, 16)
    pooled, d, maps = model.push_forward(x)
    assert pooled.shape == (2, 45, 16) and d.shape == (2, 45) and maps.shape == (2, 45, h, h)
    model.eval()
    with torch.inference_mode():
        logits, heatmap = model.forward_with_heatmap(x)
    assert logits.shape == (2, 3) and heatmap.shape == (2, 3, size, size)
    assert torch.isfinite(heatmap).all() and (heatmap >= 0).all()


def test_paper_configuration_matches_the_reference_layout():
    with torch.device("meta"):
        model = create_model("mprotonet")
    assert model.features.out_channels == 512 and model.features.stride == 8
    assert list(dict(model.features.named_children())) == ["conv1", "bn1", "relu", "maxpool",
                                                           "layer1", "layer2"]
    assert len(model.features.layer2) == 8  # resnet152: 3, 8, 36, 3 blocks
    assert model.prototype_vectors.shape == (45, 128, 1, 1)
    assert model.p_map[3].weight.shape == (45, 128, 1, 1)
    assert model.add_ons[0].weight.shape == (128, 512, 1, 1)
    assert model.last_layer.weight.shape == (3, 45) and model.last_layer.bias is None


def test_resnet_cut_and_fan_out_init():
    torch.manual_seed(0)
    feats = resnet_features(50, in_channels=4, width=64, n_layers=6)
    assert feats.out_channels == 512 and feats.stride == 8
    assert feats(torch.zeros(1, 4, 48, 48)).shape == (1, 512, 6, 6)
    conv = feats.layer2[0].conv3  # 1x1, 128 -> 512: fan_out = 512
    assert abs(float(conv.weight.detach().std()) - math.sqrt(2 / 512)) < 0.1 * math.sqrt(2 / 512)
    assert resnet_features(18, n_layers=8).out_channels == 512
    with pytest.raises(ValueError, match="depth"):
        resnet_features(42)


def test_class_identity_and_last_layer_init():
    model = small(n_classes=3, prototypes_per_class=15)
    ident = model.prototype_class_identity
    assert ident.shape == (45, 3)
    assert torch.equal(ident.argmax(1), torch.arange(45) // 15) and torch.equal(ident.sum(1),
                                                                                torch.ones(45))
    w = model.last_layer.weight.detach()
    for c in range(3):
        for j in range(45):
            assert float(w[c, j]) == (1.0 if j // 15 == c else -0.5)
    assert "prototype_class_identity" not in model.state_dict()  # derived from the config
    protos = model.prototype_vectors.detach()
    assert 0 <= float(protos.min()) and float(protos.max()) < 1


def test_soft_masking_on_a_hand_case():
    raw = torch.tensor([[[[-1.0, 0.5], [1.0, 2.0]]],
                        [[[0.0, 0.0], [0.0, 0.0]]]])  # (2, 1, 2, 2); second: all zero
    got = soft_mask(raw)
    sig = torch.sigmoid
    # ReLU -> [0, .5, 1, 2]; min 0, max 2 -> [0, .25, .5, 1]; sigmoid(10 (m - .5))
    want0 = sig(torch.tensor([[-5.0, -2.5], [0.0, 5.0]]))
    torch.testing.assert_close(got[0, 0], want0)
    # max 0 is clamped at 1e-4: m stays 0
    torch.testing.assert_close(got[1, 0], sig(torch.full((2, 2), -5.0)))
    # the min-max runs jointly over prototypes and positions, per sample
    two = soft_mask(torch.tensor([[[[1.0]], [[3.0]]]]))  # (1, K=2, 1, 1)
    torch.testing.assert_close(two.flatten(), sig(torch.tensor([-5.0, 5.0])))


def test_cosine_distance_and_similarity_on_known_vectors():
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    h = torch.tensor([[[2.0, 0.0], [3.0, 0.0], [1.0, 1.0]]])  # (B=1, K=3, D=2)
    d = cosine_distance(h, protos)
    torch.testing.assert_close(d, torch.tensor([[0.0, 1.0, 1 - 1 / math.sqrt(2)]]))
    model = small()
    torch.testing.assert_close(model.distance_2_similarity(d), 1 - d)


def test_forward_is_masked_pooling_then_cosine_then_w_cls():
    model = small().eval()
    x = torch.rand(2, 4, 48, 48)
    with torch.no_grad():
        z = model.features(x)
        g = model.add_ons(z)
        maps = soft_mask(model.p_map[:5](z))
        pooled = (maps[:, :, None] * g[:, None]).mean((3, 4))  # (B, K, D)
        cos = F.cosine_similarity(pooled, model.prototype_vectors.flatten(1)[None], dim=2)
        logits = (1 - F.relu(1 - cos)).clamp_min(0) @ model.last_layer.weight.T
        torch.testing.assert_close(model(x), logits, rtol=1e-5, atol=1e-5)


def test_heatmap_channel_is_the_class_masked_mean_of_the_maps():
    model = small().eval()
    x = torch.rand(2, 4, 48, 48)
    with torch.no_grad():
        _, _, maps = model.push_forward(x)
        logits, heatmap = model.forward_with_heatmap(x)
    for c in range(3):
        keep = (torch.arange(45) // 15 == c).float()[None, :, None, None]
        want = F.interpolate((maps * keep).mean(1, keepdim=True), size=(48, 48),
                             mode="bilinear", align_corners=False)[:, 0]
        torch.testing.assert_close(heatmap[:, c], want)
    torch.testing.assert_close(logits, model(x))


def test_checkpoint_round_trip(tmp_path):
    from gpcore.models import save_model

    model = small().eval()
    save_model(model, tmp_path / "m.safetensors")
    again = create_model(checkpoint=tmp_path / "m.safetensors").eval()
    x = torch.rand(1, 4, 48, 48)
    assert torch.equal(model(x), again(x)) and again.config == model.config


# -- losses --------------------------------------------------------------------------------------
def test_focal_loss_against_a_hand_computation():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    target = torch.tensor([0, 2])
    weights = torch.tensor([0.5, 1.0, 2.0])
    p0 = math.exp(2) / (math.exp(2) + 2)
    p1 = 1 / (2 + math.e)
    fl = [(1 - p0) ** 2 * -math.log(p0), (1 - p1) ** 2 * -math.log(p1)]
    torch.testing.assert_close(obj.focal_per_sample(logits, target),
                               torch.tensor(fl), rtol=1e-6, atol=1e-7)
    want = (0.5 * fl[0] + 2.0 * fl[1]) / 2.5
    assert abs(float(obj.focal_loss(logits, target, weights)) - want) < 1e-6


def test_cluster_and_separation_on_a_hand_case():
    identity = torch.zeros(6, 3)
    identity[torch.arange(6), torch.arange(6) // 2] = 1  # 2 prototypes per class
    d = torch.tensor([[0.3, 0.1, 0.5, 0.6, 0.9, 0.2],
                      [0.4, 0.8, 0.7, 0.05, 0.3, 0.6]])
    target = torch.tensor([0, 2])
    w = torch.tensor([1.0, 3.0]) / 4  # batch-normalised per-sample weights
    # sample 0 (class 0): own {0.3, 0.1} -> 0.1; others {0.5, 0.6, 0.9, 0.2} -> 0.2
    # sample 1 (class 2): own {0.3, 0.6} -> 0.3; others {0.4, 0.8, 0.7, 0.05} -> 0.05
    assert abs(float(obj.cluster_cost(d, target, identity, w)) - (0.1 / 4 + 0.3 * 3 / 4)) < 1e-7
    assert abs(float(obj.separation_cost(d, target, identity, w)) - (0.2 / 4 + 0.05 * 3 / 4)) \
        < 1e-7
    # the reference's max_dist form gives the same value
    max_dist = 128.0
    own = identity[:, target].T
    ref = ((max_dist - ((max_dist - d) * own).amax(1)) * w).sum()
    torch.testing.assert_close(obj.cluster_cost(d, target, identity, w), ref)


def test_mapping_loss_equivariance_term_vanishes_for_constant_features():
    model = small().eval()
    z = torch.rand(2, 16, 1, 1).expand(2, 16, 8, 8).contiguous()
    maps = model.mapping(z)
    for scale in (0.75, 0.875):
        loss = obj.mapping_loss(model.mapping, z, maps, scale)
        torch.testing.assert_close(loss, maps.abs().mean())  # only the L1 term is left
    z = torch.rand(2, 16, 8, 8)
    maps = model.mapping(z)
    want = (F.interpolate(maps, scale_factor=0.75, mode="bilinear", align_corners=True)
            - model.mapping(F.interpolate(z, scale_factor=0.75, mode="bilinear",
                                          align_corners=True))).abs().mean() + maps.abs().mean()
    torch.testing.assert_close(obj.mapping_loss(model.mapping, z, maps, 0.75), want)


def test_online_cam_shares_conv_map_and_w_cls():
    model = small().eval()
    z = torch.rand(2, 16, 6, 6)
    inner = model.p_map[2](model.p_map[1](model.p_map[0](z)))  # conv-BN-ReLU, (B, D, h, w)
    lse = (torch.logsumexp(10 * inner.flatten(2), 2) - math.log(36)) / 10
    want = (lse @ model.p_map[3].weight.flatten(1).T) @ model.last_layer.weight.T
    torch.testing.assert_close(obj.online_cam_logits(model, z, 10.0), want, rtol=1e-5, atol=1e-5)


def test_last_layer_l1_counts_wrong_class_weights_only():
    model = small()
    assert abs(float(obj.last_layer_l1(model).detach()) - 0.5 * 45 * 2) < 1e-5
    with torch.no_grad():
        model.last_layer.weight.fill_(2.0)
    assert abs(float(obj.last_layer_l1(model).detach()) - 2.0 * 45 * 2) < 1e-4


def test_warmup_cosine_schedule_matches_the_reference():
    f = warmup_cosine(100, 20)
    for e in range(100):
        want = (e + 1) / 20 if e < 20 else (1 + math.cos(math.pi * (e - 20) / 80)) / 2
        assert abs(f(e) - want) < 1e-12


# -- push ----------------------------------------------------------------------------------------
def test_push_sets_each_prototype_to_the_closest_same_class_slice():
    torch.manual_seed(3)
    model = small(prototypes_per_class=2)
    x = torch.rand(10, 4, 48, 48)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    loader = [{"image": x[i:i + 4], "label": y[i:i + 4], "row": torch.arange(i, i + 4) + 100,
               "patient_id": [f"P{j}" for j in range(i, i + 4)]} for i in range(0, 10, 4)]
    model.train()
    with torch.no_grad():
        pooled, d, _ = model.eval().push_forward(x)
    model.train()
    table = obj.push_prototypes(model, loader, torch.device("cpu"))
    assert model.training  # mode restored
    for j in range(6):
        cls = j // 2
        members = (y == cls).nonzero()[:, 0]
        best = members[d[members, j].argmin()]
        torch.testing.assert_close(model.prototype_vectors[j].flatten(), pooled[best, j])
        assert table.loc[j, "row"] == int(best) + 100 and table.loc[j, "class"] == cls
        assert abs(table.loc[j, "distance"] - float(d[best, j])) < 1e-6
    # after the push each prototype coincides with its slice's pooled vector: distance 0
    with torch.no_grad():
        _, d_after, _ = model.eval().push_forward(x)
    rows = torch.as_tensor(table["row"].to_numpy() - 100)
    assert float(d_after[rows, torch.arange(6)].max()) < 1e-5


# -- configuration and training -----------------------------------------------------------------
def test_config_resolution_per_model_defaults():
    paper = resolve_config("paper", "mprotonet")
    tc = paper["train"]
    assert (tc["epochs"], tc["batch_size"], tc["optimizer"], tc["weight_decay"]) == \
        (100, 32, "adamw", 1e-2)
    assert tc["lr_schedule"] == "warmup_cosine" and tc["drop_last"] and tc["accumulate"] == 1
    assert tc["grad_clip_value"] is None and tc["mprotonet"]["push_every"] == 10
    assert paper["model"] == {"name": "mprotonet"}
    quick = resolve_config("quick", "mprotonet", ["train.mprotonet.push_every=3"])
    assert quick["train"]["mprotonet"]["push_every"] == 3
    assert quick["train"]["mprotonet"]["coef_separation"] == -0.08
    assert quick["model"]["depth"] == 18
    gp = resolve_config("paper", "gp_unet")["train"]
    assert gp["optimizer"] == "adam" and gp["epochs"] == 300 and "mprotonet" not in gp
    assert "model_train" not in resolve_config("smoke", "gp_unet")


def test_joint_optimiser_groups_leave_w_cls_out():
    from gpcore.training.engine import make_optimiser

    model = small()
    ctx = obj.TrainingContext(net=model, step_net=model, weights=torch.ones(3), info=None,
                              device=torch.device("cpu"), amp=False, channels_last=False,
                              accumulate=1, train_loader=None, sampler=None,
                              make_push_loader=None, run=None)
    tc = resolve_config("paper", "mprotonet")["train"]
    objective = obj.build_objective(ctx, tc)
    opt = make_optimiser(objective.param_groups(), tc, torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(model.last_layer.weight) not in in_opt
    assert len(in_opt) == len(list(model.parameters())) - 1
    decay = {g["name"]: g["weight_decay"] for g in opt.param_groups}
    assert decay == {"backbone": 1e-2, "add_ons": 1e-2, "prototypes": 0.0, "p_map": 1e-2}
    last = objective.last_optimiser
    assert last.param_groups[0]["params"] == [model.last_layer.weight]
    assert last.param_groups[0]["weight_decay"] == 0 and last.param_groups[0]["lr"] == 1e-3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """10 fake subjects, 8 slices each, 16x16 (see test_training.py)."""
    from fake_data import fake_store

    return fake_store(tmp_path_factory.mktemp("mproto"), 10)


FAST = ["train.num_workers=0", "train.mprotonet.push_every=1",
        "train.mprotonet.last_layer_passes=2"]


def test_training_pushes_selects_and_reloads(data, tmp_path):
    store, split = data
    out = train(store, split, tmp_path / "run", model="mprotonet", profile="smoke",
                progress=False, overrides=FAST)
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics.epoch.tolist() == [1, 2] and metrics.pushed.all()
    for col in ("train_focal", "train_cluster", "train_separation", "train_mapping",
                "train_online_cam", "last_layer_loss"):
        assert np.isfinite(metrics[col]).all(), col
    protos = pd.read_csv(out / "prototypes.csv")
    assert len(protos) == 45 and (protos.epoch == 2).all()
    model = create_model(checkpoint=out / "last.safetensors").eval()
    # the last push copied a training slice's pooled vector into every prototype whose class
    # had training slices, and the last-layer passes moved W_cls away from +1/-0.5
    assert not torch.equal(model.last_layer.weight, small().last_layer.weight)
    best = create_model(checkpoint=out / "best.safetensors").eval()
    meta = read_checkpoint_meta(out / "best.safetensors")
    assert meta["model"] == "mprotonet" and meta["config"]["depth"] == 18
    state = load_file(out / "best.safetensors")
    x = torch.rand(3, 4, 16, 16)
    rebuilt = create_model("mprotonet", **meta["config"])
    rebuilt.load_state_dict(state)
    assert torch.equal(best(x), rebuilt.eval()(x))
    assert best.forward_with_heatmap(x)[1].shape == (3, 3, 16, 16)


def test_resume_after_an_interruption_gives_the_same_run(data, tmp_path, monkeypatch):
    from gpcore.training import engine

    store, split = data
    full = train(store, split, tmp_path / "full", model="mprotonet", profile="smoke",
                 progress=False, overrides=FAST)
    calls = {"n": 0}
    real_barrier = engine.barrier

    class Interrupted(Exception):
        pass

    def barrier_then_stop(info):  # the 2nd barrier follows the save of epoch 1
        calls["n"] += 1
        if calls["n"] == 2:
            raise Interrupted
        real_barrier(info)

    monkeypatch.setattr(engine, "barrier", barrier_then_stop)
    with pytest.raises(Interrupted):
        train(store, split, tmp_path / "cut", model="mprotonet", profile="smoke",
              progress=False, overrides=FAST)
    monkeypatch.setattr(engine, "barrier", real_barrier)
    assert len(pd.read_csv(tmp_path / "cut" / "metrics.csv")) == 1
    state = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert state["objective"]["last_layer_optimiser"]["state"]  # Adam moments saved
    train(store, split, tmp_path / "cut", model="mprotonet", profile="smoke", progress=False,
          resume=True)
    timeless = [c for c in pd.read_csv(full / "metrics.csv").columns if c.endswith("seconds")]
    assert len(timeless) == 3
    pd.testing.assert_frame_equal(
        pd.read_csv(full / "metrics.csv").drop(columns=timeless),
        pd.read_csv(tmp_path / "cut" / "metrics.csv").drop(columns=timeless))
    a, b = load_file(full / "last.safetensors"), load_file(tmp_path / "cut" / "last.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    shutil.rmtree(tmp_path / "cut")
