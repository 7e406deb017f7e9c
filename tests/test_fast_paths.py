"""Fast paths (gpcore.training.fast) give the eager path's outputs; efficiency measurements."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import SMALL, small_model
from gpcore.training import fast as fast_mod
from gpcore.training.fast import CompileWithFallback, FastPaths

MODELS = sorted(SMALL)
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(name, **switches):
    torch.manual_seed(0)
    net = small_model(name, dropout=0.0) if name == "gp_unet" else small_model(name)
    return net.eval(), FastPaths(CPU, **switches)


def _x(b=2, size=32):
    return torch.rand(b, 4, size, size, generator=torch.Generator().manual_seed(1))


def _corr(a, b):
    return float(np.corrcoef(a.float().flatten().numpy(), b.float().flatten().numpy())[0, 1])


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------
def test_from_config_auto_and_deterministic(monkeypatch):
    cfg = {"bf16": "auto", "channels_last": "auto", "compile": False, "cudnn_benchmark": "auto",
           "pin_memory": "auto", "persistent_workers": True}
    gpu = FastPaths.from_config(cfg, "cuda")
    assert gpu.bf16 and gpu.channels_last and gpu.cudnn_benchmark and gpu.pin_memory
    assert gpu.fused_adam and gpu.optimiser_kwargs() == {"fused": True}
    assert not FastPaths.from_config(cfg, "cuda", deterministic=True).cudnn_benchmark
    for amx in (True, False):
        monkeypatch.setattr(fast_mod, "cpu_has_native_bf16", lambda amx=amx: amx)
        cpu = FastPaths.from_config(cfg, "cpu")
        assert cpu.bf16 is amx and cpu.channels_last is amx  # channels_last follows bf16
        assert not (cpu.cudnn_benchmark or cpu.pin_memory or cpu.fused_adam)
        assert not FastPaths.from_config({**cfg, "bf16": False}, "cpu").channels_last
    forced = FastPaths.from_config({"channels_last": True, "cudnn_benchmark": True}, "cpu")
    assert forced.channels_last and not forced.cudnn_benchmark  # no cuDNN on a CPU
    assert FastPaths.eager("cpu").is_eager and FastPaths.eager("cpu").describe() == "eager fp32"
    kw = FastPaths(CPU, persistent_workers=True).loader_kwargs(2, deterministic=True)
    assert kw == {"num_workers": 2, "pin_memory": False, "persistent_workers": False}
    with pytest.raises(ValueError, match="unknown switch"):
        FastPaths.from_config({"bf61": True}, "cpu")
    with pytest.raises(ValueError, match="true, false or 'auto'"):
        FastPaths.from_config({"bf16": "yes"}, "cpu")


# --------------------------------------------------------------------------------------------
# numerics against the eager path
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_channels_last_matches_eager(name):
    net, fast = _pair(name, channels_last=True)
    x = _x()
    with torch.no_grad():
        lo, hm = net.forward_with_heatmap(x)
        net_cl = fast.prepare_model(net)
        xc = fast.prepare_batch(x)
        assert xc.is_contiguous(memory_format=torch.channels_last)
        with fast.inference_context():
            lo_c, hm_c = net_cl.forward_with_heatmap(xc)
    scale = hm.abs().max()
    assert float((hm_c - hm).abs().max() / scale) < 1e-5
    assert float((lo_c - lo).abs().max() / lo.abs().max()) < 1e-5


def test_channels_last_training_step_matches_eager():
    x, y = _x(4), torch.tensor([0, 1, 2, 1])
    grads = []
    for switches in ({}, {"channels_last": True}):
        net, fast = _pair("gp_unet", **switches)
        net = fast.prepare_model(net.train())
        loss = F.cross_entropy(net(fast.prepare_batch(x)), y)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert float((grads[1] - grads[0]).abs().max() / grads[0].abs().max()) < 1e-4


@pytest.mark.parametrize("name", MODELS)
def test_bf16_autocast_within_bf16_tolerance(name):
    net, fast = _pair(name, bf16=True)
    x = _x()
    with torch.no_grad():
        lo, hm = net.forward_with_heatmap(x)
    with fast.inference_context():
        lo_b, hm_b = net.forward_with_heatmap(x)
    assert hm_b.dtype == torch.bfloat16  # autocast really ran in bf16
    assert torch.isfinite(hm_b).all()
    assert _corr(hm_b, hm) > 0.99
    assert float((lo_b.float() - lo).abs().max() / hm.abs().max()) < 0.05


# --------------------------------------------------------------------------------------------
# torch.compile: off, a failure at wrap time, a failure at the first call
# --------------------------------------------------------------------------------------------
def test_compile_off_returns_the_model():
    net = small_model("gp_unet")
    assert FastPaths(CPU).compile_model(net) is net


def test_compile_falls_back_to_eager(monkeypatch):
    net, _ = _pair("gp_unet")
    x = _x(1)
    with torch.no_grad():
        want = net(x)

    def broken_at_call(module, **kw):
        def call(*a, **k):
            raise RuntimeError("inductor: no working C++ compiler")
        return call

    monkeypatch.setattr(torch, "compile", broken_at_call)
    step_net = FastPaths(CPU, compile=True).compile_model(net)
    assert isinstance(step_net, CompileWithFallback)
    with pytest.warns(RuntimeWarning, match="continuing in eager mode"):
        got = step_net(x)
    assert torch.equal(got, want)
    assert isinstance(step_net.failed, RuntimeError)
    step_net.train()  # attributes pass through to the module
    assert net.training and step_net.module is net
    assert step_net.state_dict().keys() == net.state_dict().keys()

    def broken_at_wrap(module, **kw):
        raise RuntimeError("dynamo unsupported on this platform")

    monkeypatch.setattr(torch, "compile", broken_at_wrap)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        assert FastPaths(CPU, compile=True).compile_model(net) is net


# --------------------------------------------------------------------------------------------
# predict_store's fast option and the efficiency functions
# --------------------------------------------------------------------------------------------
def test_predict_store_fast_option(tmp_path):
    from fake_data import fake_subject
    from gpcore.data.records import BRATS_CONTRASTS
    from gpcore.data.store import build_store
    from gpcore.inference.predict import predict_store
    import json

    store = build_store([fake_subject(1), fake_subject(2, "LGG")], tmp_path / "store",
                        source={"kind": "fake"}, channels=BRATS_CONTRASTS, size=32, workers=1,
                        progress=False)
    net, _ = _pair("gp_unet")
    plain = predict_store(net, store, None, tmp_path / "plain", batch_size=4, progress=False)
    fast = predict_store(net, store, None, tmp_path / "fast", batch_size=4, progress=False,
                         fast=FastPaths(CPU, channels_last=True))
    a, b = np.load(plain / "heatmaps.npy"), np.load(fast / "heatmaps.npy")
    assert np.allclose(a, b, rtol=1e-3, atol=1e-3 * np.abs(a).max())
    assert json.loads((plain / "predict.json").read_text())["fast"] == "off"
    assert json.loads((fast / "predict.json").read_text())["fast"] == "channels_last"
    assert next(net.parameters()).is_contiguous()  # the caller's model is given back as it was
    with pytest.raises(TypeError, match="fast must be"):
        predict_store(net, store, None, tmp_path / "bad", fast="yes", progress=False)


def test_efficiency_measurements():
    from gpcore.study import efficiency as eff
    from gpcore.models import count_flops, create_model

    fwd = eff.forward_flops("gp_unet", 32, wf=2)
    assert fwd == count_flops(create_model("gp_unet", wf=2), (1, 4, 32, 32))
    trn = eff.training_flops("gp_unet", 32, wf=2)
    assert 2.5 * fwd < trn < 3.05 * fwd
    t = eff.time_training("gp_unet", FastPaths.eager("cpu"), batch=2, size=32, steps=2,
                          warmup=0, wf=2)
    assert len(t.seconds) == 2 and t.slices_per_s > 0 and t.peak_mem >= t.peak_mem_delta >= 0
    i = eff.time_inference("gp_unet", FastPaths(CPU, channels_last=True), batch=1, size=32,
                           reps=2, warmup=0, wf=2)
    assert i.mean_s > 0
    with eff.PeakMemory("cpu") as mem:
        block = torch.ones(64 * 2**20 // 4)
        del block
    assert mem.delta > 32 * 2**20, mem
    table = eff.efficiency_table(["gp_unet"], "cpu", size=16, batch_sizes=(1, 2),
                                 fast=FastPaths.eager("cpu"), reps=1, progress=False)
    assert list(table["model"]) == ["gp_unet"] and table.at[0, "parameters"] == 1_740_675
    assert {"gflops_per_slice", "latency_ms_batch1", "slices_per_s_batch2",
            "peak_mem_mib_batch2"} <= set(table.columns)


def test_cpu_label_names_the_bf16_hardware_or_its_absence(monkeypatch):
    """Result labels say which numeric path the CPU allows (issue 13: a table must name its
    CPU and path): AMX, AVX-512 BF16, or none (fp32)."""
    from gpcore import machine
    from gpcore.training import fast

    monkeypatch.setattr(machine, "cpu_model", lambda: "Some CPU")
    for kind, label in (("amx", "Some CPU (AMX bf16)"),
                        ("avx512_bf16", "Some CPU (AVX-512 bf16)"),
                        (None, "Some CPU (no bf16 hardware)")):
        monkeypatch.setattr(fast, "cpu_bf16_kind", lambda kind=kind: kind)
        assert machine.cpu_label() == label
