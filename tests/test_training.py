"""The training engine: run folder, exact resume after a kill, DDP (gloo, 2 CPU processes)
against one process with the same global batch."""
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from gpcore.models import create_model, read_checkpoint_meta
from gpcore.training import resolve_config, train
from fake_data import fake_store

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """10 fake subjects, 8 slices each (a multiple of every batch size used here), 16×16."""
    return fake_store(tmp_path_factory.mktemp("train"), 10)


def _cli(store, split, out, *extra, resume=False):
    cmd = [sys.executable, "-m", "gpcore.training.cli", "--store", str(store), "--split", str(split),
           "--profile", "smoke", "--out", str(out), "--no-progress", *extra]
    return cmd + (["--resume"] if resume else [])


def test_run_folder_contents(data, tmp_path):
    store, split = data
    out = train(store, split, tmp_path / "run", profile="smoke", progress=False,
                overrides=["train.epochs=2"])
    record = yaml.safe_load((out / "config.yaml").read_text())
    assert record["config"]["train"]["epochs"] == 2 and record["config"]["profile"] == "smoke"
    assert record["store"]["version"] == 1 and record["split"]["protocol"] == "patient-level"
    assert record["versions"]["torch"] == str(torch.__version__)
    assert len(record["class_weights"]) == 3 and record["class_weights"][0] > 0
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics.epoch.tolist() == [1, 2] and metrics.val_macro_f1.between(0, 1).all()
    model = create_model(checkpoint=out / "best.safetensors")
    meta = read_checkpoint_meta(out / "best.safetensors")
    assert meta["extra"]["input_size"] == 16 and meta["extra"]["classes"][0] == "Healthy"
    assert model(torch.zeros(1, 4, 16, 16)).shape == (1, 3)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_epoch"] in (1, 2)
    assert (out / "curves.png").stat().st_size > 5000
    with pytest.raises(FileExistsError, match="--resume"):
        train(store, split, out, profile="smoke", progress=False)


def test_same_seed_gives_identical_metrics(data, tmp_path):
    store, split = data
    runs = [train(store, split, tmp_path / f"r{i}", profile="smoke", progress=False,
                  overrides=["train.epochs=2"]) for i in range(2)]
    a, b = (pd.read_csv(r / "metrics.csv").drop(columns="seconds") for r in runs)
    pd.testing.assert_frame_equal(a, b)


def test_killed_run_resumes_to_the_same_weights(data, tmp_path):
    store, split = data
    args = ["train.epochs=4", "train.num_workers=2"]
    subprocess.run(_cli(store, split, tmp_path / "full", *args), check=True, env=ENV,
                   capture_output=True)
    proc = subprocess.Popen(_cli(store, split, tmp_path / "killed", *args), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    metrics = tmp_path / "killed" / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file()
                                          and len(metrics.read_text().splitlines()) >= 2):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(pd.read_csv(metrics))
    assert 1 <= done < 4, "the kill came after the run had finished"
    assert not (tmp_path / "killed" / "summary.json").exists()
    subprocess.run(_cli(store, split, tmp_path / "killed", resume=True), check=True, env=ENV,
                   capture_output=True)
    full = load_file(tmp_path / "full" / "last.safetensors")
    resumed = load_file(tmp_path / "killed" / "last.safetensors")
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "full" / "metrics.csv").drop(columns="seconds"),
        pd.read_csv(tmp_path / "killed" / "metrics.csv").drop(columns="seconds"))


def test_ddp_two_processes_match_one_process_with_the_same_global_batch(data, tmp_path):
    store, split = data
    # augmentation and dropout draw per-process random numbers, and bf16 autocast (on for AMX
    # CPUs) rounds sums of different micro-batches differently: all off for an exact comparison
    common = ["train.epochs=2", "train.augment=false", "model.dropout=0.0",
              "train.fast.bf16=false", "train.fast.channels_last=false"]
    subprocess.run(_cli(store, split, tmp_path / "single", *common, "train.batch_size=8"),
                   check=True, env=ENV, capture_output=True)
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           *_cli(store, split, tmp_path / "ddp", *common, "train.batch_size=4")[1:]]
    result = subprocess.run(ddp, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = yaml.safe_load((tmp_path / "ddp" / "config.yaml").read_text())
    assert record["world_size"] == 2
    single = load_file(tmp_path / "single" / "last.safetensors")
    multi = load_file(tmp_path / "ddp" / "last.safetensors")
    changed = False
    for key in single:
        torch.testing.assert_close(multi[key], single[key], rtol=1e-4, atol=1e-5)
        changed |= not torch.equal(single[key], create_model_init(key))
    assert changed
    a, b = (pd.read_csv(tmp_path / r / "metrics.csv") for r in ("single", "ddp"))
    assert (a.val_loss - b.val_loss).abs().max() < 1e-4


def create_model_init(key):
    torch.manual_seed(resolve_config("smoke", "gp_unet")["train"]["seed"])
    cfg = resolve_config("smoke", "gp_unet")["model"]
    model = create_model("gp_unet", **{k: v for k, v in cfg.items() if k != "name"},
                         dropout=0.0)
    return model.state_dict()[key]


def test_evaluate_writes_tables_and_figures_with_a_validation_offset(data, tmp_path):
    from gpcore.evaluation.run import evaluate

    store, split = data
    run = train(store, split, tmp_path / "run", profile="smoke", progress=False,
                overrides=["train.epochs=1"])
    out = evaluate(run, n_resamples=200, workers=1, progress=False)
    for name in ("classification_summary", "classification_per_class", "confusion_matrix",
                 "tumour_only_grade", "segmentation_summary", "offset_grid_validation",
                 "patient_dice_3d"):
        assert (out / f"{name}.csv").is_file() and (out / f"{name}.md").is_file(), name
    assert (out / "confidence_fidelity.csv").is_file()
    for name in ("roc_pr", "confusion_matrix", "dice_distribution", "confidence_vs_dice",
                 "example_grid"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 5000, name
    choice = json.loads((out / "offset_choice.json").read_text())
    assert choice["chosen_on"] == "validation patients" and choice["published_offset"] == 0.3
    grid = pd.read_csv(out / "offset_grid_validation.csv")
    assert {"offset", "cleanup", "median_dice"} <= set(grid.columns)
    summary = pd.read_csv(out / "segmentation_summary.csv")
    assert set(summary.setting) == {"validation-chosen", "published"}
    assert summary.run.str.contains("patient-level split, profile smoke, fold 0").all()
    test_patients = set(pd.read_csv(run / "predictions/test/index.csv", dtype=str).patient_id)
    split_df = pd.read_csv(split, dtype={"patient_id": str})
    expected = set(split_df[(split_df.fold == 0) & (split_df.part == "test")].patient_id)
    assert test_patients == expected


def test_fold_aggregation_pools_every_patient_once(data, tmp_path):
    from gpcore.evaluation.run import aggregate_folds, evaluate

    store, split = data
    runs = []
    for fold in (0, 1):
        run = train(store, split, tmp_path / f"f{fold}", fold=fold, profile="smoke",
                    progress=False, overrides=["train.epochs=1"])
        evaluate(run, n_resamples=100, workers=1, progress=False)
        runs.append(run)
    out = aggregate_folds(runs, tmp_path / "folds", n_resamples=100)
    table = pd.read_csv(out / "folds_classification.csv").set_index("metric")
    assert table.loc["accuracy", "n_folds"] == 2 and "pooled" in table.columns
    assert table.loc["n_slices", "pooled"] == 80  # 10 patients × 8 slices, each tested once
    seg = pd.read_csv(out / "folds_segmentation_summary.csv")
    assert seg.loc[seg.subset == "tumour", "n_patients"].iloc[0] == 10
    assert (out / "figures/folds_roc_pr.png").is_file()


def test_class_sampling_power_draws_rare_classes_more_often_and_trains_reproducibly(data,
                                                                                  tmp_path):
    from gpcore.training.distributed import DistInfo
    from gpcore.training.engine import build_loaders
    from gpcore.training.fast import FastPaths

    store, split = data
    shares = {}
    for power in (0.0, 1.0):
        tc = resolve_config("smoke", "gp_unet",
                            [f"train.class_sampling_power={power}"])["train"]
        fold = build_loaders(tc, store, split, 0, FastPaths.eager("cpu"), DistInfo(),
                             torch.device("cpu"))
        labels = fold.store.index["label"].to_numpy()[fold.train_rows]
        drawn = []
        for epoch in range(200):  # smoke: 8 training slices an epoch
            fold.sampler.set_epoch(epoch)
            drawn += list(fold.sampler)
        assert len(fold.sampler) == len(fold.train_rows)  # epoch length unchanged
        counts = torch.bincount(torch.as_tensor(labels[drawn]), minlength=3).numpy()
        shares[power] = counts / counts.sum()
    assert shares[0.0].max() >= 0.5  # the fake store is imbalanced (1/2, 1/4, 1/4)
    assert abs(shares[1.0] - 1 / 3).max() < 0.06  # balanced draws
    bad = resolve_config("smoke", "gp_unet", ["train.class_sampling_power=-0.5"])["train"]
    with pytest.raises(ValueError, match="class_sampling_power"):  # not silently unsampled
        build_loaders(bad, store, split, 0, FastPaths.eager("cpu"), DistInfo(),
                      torch.device("cpu"))
    runs = [train(store, split, tmp_path / f"r{i}", profile="smoke", progress=False,
                  overrides=["train.epochs=1", "train.class_sampling_power=0.5"])
            for i in range(2)]
    a, b = (pd.read_csv(r / "metrics.csv").drop(columns="seconds") for r in runs)
    pd.testing.assert_frame_equal(a, b)


def test_one_vs_rest_loss_is_a_sigmoid_per_class_and_trains(data, tmp_path):
    import math

    from gpcore.training import objectives as obj

    logits = torch.tensor([[2.0, -1.0, 0.0], [0.5, 0.5, 3.0]])
    target = torch.tensor([0, 2])
    sp = lambda v: math.log1p(math.exp(v))  # softplus: BCE(z, 1) = sp(-z), BCE(z, 0) = sp(z)
    want = [sp(-2.0) + sp(-1.0) + sp(0.0), sp(0.5) + sp(0.5) + sp(-3.0)]
    got = obj.OneVsRestObjective.per_sample_loss(logits, target)
    assert torch.allclose(got, torch.tensor(want), atol=1e-6)
    # unlike the softmax, a constant added to every logit changes the loss: shared evidence
    # is not free on the class maps
    assert not torch.allclose(obj.OneVsRestObjective.per_sample_loss(logits + 3, target), got)
    ce = obj.CrossEntropyObjective.per_sample_loss
    assert torch.allclose(ce(logits + 3, target), ce(logits, target), atol=1e-5)

    model = create_model("gp_unet", in_channels=4, n_classes=3, wf=2, depth=2)
    ctx = obj.TrainingContext(net=model, step_net=model, weights=torch.ones(3), info=None,
                              device=torch.device("cpu"), amp=False, channels_last=False,
                              accumulate=1, train_loader=None, sampler=None,
                              make_push_loader=None, run=None)
    tc = resolve_config("smoke", "gp_unet", ["train.loss=one_vs_rest"])["train"]
    assert isinstance(obj.build_objective(ctx, tc), obj.OneVsRestObjective)
    plain = resolve_config("smoke", "gp_unet")["train"]
    assert type(obj.build_objective(ctx, plain)) is obj.CrossEntropyObjective
    proto = create_model("mprotonet", in_channels=4, n_classes=3)
    ctx_p = obj.TrainingContext(**{**ctx.__dict__, "net": proto, "step_net": proto})
    mp_tc = resolve_config("smoke", "mprotonet", ["train.loss=one_vs_rest"])["train"]
    with pytest.raises(ValueError, match="train.loss"):  # not silently ignored
        obj.build_objective(ctx_p, mp_tc)

    store, split = data
    out = train(store, split, tmp_path / "ovr", profile="smoke", progress=False,
                overrides=["train.epochs=1", "train.loss=one_vs_rest", "model.pool=heatmap",
                           "model.heatmap_pool=lse"])
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["train_loss"].notna().all() and len(metrics) == 1
