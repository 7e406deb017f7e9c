"""gpcore compare / gpcore.explanations.run on tiny trained runs: the table, the cache, the figures, and
the per-run explanation metrics against direct computations."""
import json

import numpy as np
import pandas as pd
import pytest

from gpcore.evaluation.explanation import activation_precision, deletion_curve
from gpcore.explanations.run import ExplainConfig, explain_run, load_run, own_maps, spread_rows
from gpcore.training import train
from fake_data import fake_store

CFG = ExplainConfig(occlusion_window=5, occlusion_stride=4, captum_max_slices=6,
                    ids_max_slices=24, batch_size=8, n_resamples=100)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    store, split = fake_store(root, 8)
    return [train(store, split, root / name, model=name, profile="smoke",
                  progress=False, overrides=["train.epochs=1"])
            for name in ("gp_unet", "gp_recon_resnet")]


def test_spread_rows_is_deterministic_and_bounded():
    pos = spread_rows(np.arange(10, 30), np.repeat(["a", "b"], 10), 5)
    assert len(pos) == 5 and np.all(np.diff(pos) > 0)
    assert np.array_equal(pos, spread_rows(np.arange(10, 30), np.repeat(["a", "b"], 10), 5))
    assert len(spread_rows(np.arange(3), np.array(["a"] * 3), 5)) == 3


def test_compare_writes_table_figures_and_reuses_explanations(runs, tmp_path):
    from gpcore.evaluation.compare import compare

    out = compare(runs, tmp_path / "cmp", CFG, n_resamples=100, progress=False)
    table = pd.read_csv(out / "comparison.csv")
    assert table["model"].tolist() == ["gp_unet", "gp_recon_resnet", "all-brain mask (baseline)"]
    assert table.loc[1, "guided backprop"] == "not guided"  # PReLU model, stated
    long = pd.read_csv(out / "comparison_long.csv")
    # the paired gain over the all-brain mask: model median minus baseline median, same slices
    base = long[(long.model == "all_brain_mask") & (long.metric == "median_dice")]["estimate"]
    for name in ("gp_unet", "gp_recon_resnet"):
        dice = long[(long.model == name) & (long.metric == "median_dice")]["estimate"]
        gain = long[(long.model == name) & (long.metric == "median_dice_minus_all_brain")]
        assert gain["estimate"].iloc[0] == pytest.approx(dice.iloc[0] - base.iloc[0])
        assert gain["low"].iloc[0] <= gain["estimate"].iloc[0] <= gain["high"].iloc[0]
    ids = long[long.metric == "ids"]["estimate"]
    assert len(ids) == 2 and ids.between(0, 1).all()
    for name in ("explanation_grid", "captum_grid", "deletion_curves"):
        assert (out / f"{name}.png").stat().st_size > 5000, name
    stamp = runs[0] / "explanations" / "explain.json"
    before = stamp.stat().st_mtime_ns
    compare(runs, tmp_path / "cmp2", CFG, n_resamples=100, progress=False)
    assert stamp.stat().st_mtime_ns == before  # same settings: cached


def test_explain_metrics_match_direct_computation(runs):
    run = runs[0]
    folder = explain_run(run, CFG, progress=False)
    record = json.loads((folder / "explain.json").read_text())
    loaded = load_run(run)
    test = loaded["test"]
    ap = pd.read_csv(folder / "ap_slices.csv")
    p = int(ap.position.iloc[0])
    direct = activation_precision(test["heatmaps"][p, test["labels"][p]].astype(np.float32),
                                  test["masks"][p])
    assert ap.ap.iloc[0] == pytest.approx(direct["ap"])
    assert record["metrics"]["ap_slice_mean"]["estimate"] == pytest.approx(ap.ap.mean())
    # the chunked deletion curve equals deletion_curve over the same slices in one call
    from gpcore.explanations.run import model_inputs
    from gpcore.explanations.captum_maps import LogitsModel
    import torch

    pos = spread_rows(np.arange(len(test["labels"])), test["patient_ids"], CFG.ids_max_slices)
    curve = deletion_curve(LogitsModel(loaded["model"], CFG.autocast("cpu")),
                           model_inputs(loaded, pos), torch.from_numpy(own_maps(test, pos)),
                           test["labels"][pos], batch_size=CFG.batch_size)
    saved = pd.read_csv(folder / "deletion_curve.csv")
    assert np.allclose(saved.balanced_accuracy, curve[:, 1])
    agreement = pd.read_csv(folder / "agreement_slices.csv")
    assert len(agreement) <= CFG.captum_max_slices
    assert agreement["spearman_occlusion"].dropna().between(-1, 1).all()
