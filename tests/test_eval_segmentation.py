"""Segmentation evaluation: Dice / IoU, slice scoring, patient bootstrap, 3D Dice, offset
selection on validation data only (gpcore.evaluation.segmentation)."""
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from gpcore.evaluation import segmentation as seg
from gpcore.evaluation.bootstrap import (bootstrap_mean_ci, bootstrap_median_ci,
                                         bootstrap_median_difference_ci)
from gpcore.evaluation.segmentation import (dice_iou, evaluate_with_validation_offset,
                                            patient_dice_3d, score_slices, segmentation_summary,
                                            select_offset)
from gpcore.inference import heatmap_to_mask

H = W = 48


def _blob(cy, cx, r, amp=2.0, size=H):
    yy, xx = np.mgrid[:size, :size]
    return amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r ** 2))


def _dataset(n=12, seed=0, k=3):
    """Slices with a Gaussian blob in the channel of the true class and a disk ground truth."""
    rng = np.random.default_rng(seed)
    heat = rng.normal(0, 0.05, (n, k, H, W)).astype(np.float16)
    masks = np.zeros((n, H, W), np.uint8)
    labels = np.arange(n) % k
    probs = np.full((n, k), 0.1)
    yy, xx = np.mgrid[:H, :W]
    for i in range(n):
        cy, cx = rng.integers(14, 34, 2)
        if labels[i] != 0:
            heat[i, labels[i]] += _blob(cy, cx, 5).astype(np.float16)
            masks[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= 49] = rng.choice([1, 2, 4])
        probs[i, labels[i]] = 0.8
    return heat, probs / probs.sum(1, keepdims=True), masks, labels


# ---- Dice / IoU ---------------------------------------------------------------------------
def test_dice_matches_sklearn_f1_and_iou_definition():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.random((2, 16, 16)) < rng.random(2)[:, None, None]
        if not (a.any() or b.any()):
            continue
        d, i = dice_iou(a, b)
        assert d == pytest.approx(f1_score(b.ravel(), a.ravel()))
        assert i == pytest.approx((a & b).sum() / (a | b).sum())


def test_dice_edge_cases():
    gt = np.zeros((8, 8), bool)
    gt[2:5, 2:5] = True
    assert dice_iou(np.zeros_like(gt), gt) == (0.0, 0.0)
    assert dice_iou(gt, gt) == (1.0, 1.0)
    d, i = dice_iou(np.zeros_like(gt), np.zeros_like(gt))
    assert np.isnan(d) and np.isnan(i)
    with pytest.raises(ValueError):
        dice_iou(gt, gt[:4])


# ---- slice scoring ------------------------------------------------------------------------
def test_score_slices_matches_heatmap_to_mask_per_slice():
    heat, probs, masks, labels = _dataset(12)
    heat[1, 1] = np.linspace(-1, 1, H * W).reshape(H, W)  # a smooth ramp with negatives
    for offset in (0.0, 0.3, 1.6):
        for cleanup in (True, False):
            table = score_slices(heat, probs, masks, labels, offset, cleanup, scale=0.5)
            for r in range(len(labels)):
                k = probs[r].argmax()
                m = (np.zeros((H, W), bool) if k == 0
                     else heatmap_to_mask(heat[r, k], offset, cleanup, scale=0.5))
                row = table.iloc[r]
                assert row["mask_area"] == m.sum()
                assert row["gt_area"] == (masks[r] > 0).sum()
                assert row["intersection"] == (m & (masks[r] > 0)).sum()
                d, i = dice_iou(m, masks[r] > 0)
                np.testing.assert_equal([row["dice"], row["iou"]], [d, i])
    assert list(table.columns) == ["row", "pred", "label", "prob_pred", "gt_area", "mask_area",
                                   "intersection", "dice", "iou"]


def test_constant_and_negative_heatmaps_give_empty_masks():
    heat, probs, masks, labels = _dataset(6)
    heat[1, 1] = 0.7           # constant
    heat[2, 2] = -np.abs(heat[2, 2]) - 1  # all negative: thr = max(0, ...) = 0
    table = score_slices(heat, probs, masks, labels, 0.3)
    assert table.loc[1, "mask_area"] == 0 and table.loc[1, "dice"] == 0
    assert table.loc[2, "mask_area"] == 0 and table.loc[2, "dice"] == 0


def test_true_vs_predicted_channel_and_predicted_healthy():
    heat, probs, masks, labels = _dataset(6)
    # slice 1 (true class 1) predicted as class 2: the class-2 channel has no blob
    probs[1] = [0.1, 0.2, 0.7]
    # slice 2 (true class 2) predicted Healthy: empty mask under "predicted"
    probs[2] = [0.8, 0.1, 0.1]
    pred = score_slices(heat, probs, masks, labels, 0.3)
    true = score_slices(heat, probs, masks, labels, 0.3, channel="true")
    assert pred.loc[1, "pred"] == 2 and pred.loc[1, "dice"] < 0.2
    assert true.loc[1, "dice"] > 0.7
    assert pred.loc[2, "mask_area"] == 0 and pred.loc[2, "dice"] == 0
    assert true.loc[2, "dice"] > 0.7
    assert pred.loc[2, "prob_pred"] == pytest.approx(0.8)
    with pytest.raises(ValueError):
        score_slices(heat, probs, masks, labels, 0.3, channel="other")


def test_rows_subset_and_process_pool(monkeypatch):
    heat, probs, masks, labels = _dataset(20)
    full = score_slices(heat, probs, masks, labels, 0.3, workers=1)
    sub = score_slices(heat, probs, masks, labels, 0.3, rows=[5, 2, 17], workers=1)
    pd.testing.assert_frame_equal(sub, full.iloc[[5, 2, 17]].reset_index(drop=True))
    monkeypatch.setattr(seg, "PARALLEL_MIN", 0)
    monkeypatch.setattr(seg, "CHUNK", 3)
    pooled = score_slices(heat, probs, masks, labels, 0.3, workers=2)
    pd.testing.assert_frame_equal(pooled, full)


def test_memmap_inputs(tmp_path):
    heat, probs, masks, labels = _dataset(8)
    np.save(tmp_path / "h.npy", heat)
    mm = np.load(tmp_path / "h.npy", mmap_mode="r")
    pd.testing.assert_frame_equal(score_slices(mm, probs, masks, labels, 0.3),
                                  score_slices(heat, probs, masks, labels, 0.3))


# ---- bootstrap ----------------------------------------------------------------------------
def _slow_bootstrap(values, groups, n, seed=0, ci=0.95):
    keep = ~np.isnan(values)
    values, groups = values[keep], groups[keep]
    _, g = np.unique(groups, return_inverse=True)
    n_groups = g.max() + 1
    rng = np.random.default_rng(seed)
    meds = []
    for _ in range(n):
        counts = np.bincount(rng.integers(0, n_groups, size=n_groups), minlength=n_groups)
        meds.append(np.median(np.repeat(values, counts[g])))
    low, high = np.percentile(meds, [100 * (1 - ci) / 2, 100 * (1 + ci) / 2])
    return np.median(values), low, high


@pytest.mark.parametrize("s,g,decimals", [(40, 6, 2), (301, 30, 1), (2500, 50, 3), (7, 7, 2)])
def test_bootstrap_matches_slow_reference(s, g, decimals):
    rng = np.random.default_rng(s)
    values = np.round(rng.random(s), decimals)  # rounding makes ties
    groups = rng.integers(0, g, s).astype(str)
    assert bootstrap_median_ci(values, groups, 400, seed=3) == _slow_bootstrap(values, groups,
                                                                               400, seed=3)


@pytest.mark.parametrize("s,g", [(40, 6), (301, 30), (9, 9)])
def test_paired_median_difference_matches_slow_reference(s, g):
    rng = np.random.default_rng(s)
    a, b = np.round(rng.random(s), 2), np.round(rng.random(s) * 0.5, 2)
    a[0] = np.nan  # dropped from both
    groups = rng.integers(0, g, s).astype(str)
    keep = ~np.isnan(a)
    _, gi = np.unique(groups[keep], return_inverse=True)
    rng2 = np.random.default_rng(5)
    diffs = []
    for _ in range(300):  # the same patients drawn for both scores
        w = np.bincount(rng2.integers(0, gi.max() + 1, size=gi.max() + 1),
                        minlength=gi.max() + 1)[gi]
        diffs.append(np.median(np.repeat(a[keep], w)) - np.median(np.repeat(b[keep], w)))
    est, low, high = bootstrap_median_difference_ci(a, b, groups, 300, seed=5)
    assert est == pytest.approx(np.median(a[keep]) - np.median(b[keep]))
    assert (low, high) == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])))


def test_paired_difference_cancels_shared_patient_effects():
    # every slice of model a beats b by exactly 0.1, patients differ a lot: the paired CI is
    # the single point 0.1, while the unpaired CIs of the two medians overlap
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(6), 20)
    b = rng.random(6)[groups] * 0.5 + rng.random(120) * 0.01
    diff = bootstrap_median_difference_ci(b + 0.1, b, groups, 500)
    assert diff == pytest.approx((0.1, 0.1, 0.1))
    assert bootstrap_median_ci(b + 0.1, groups, 500)[1] < bootstrap_median_ci(b, groups, 500)[2]
    with pytest.raises(ValueError, match="differ in length"):
        bootstrap_median_difference_ci(b, b[:3], groups)


def test_bootstrap_single_patient_and_nan():
    values = np.array([0.2, 0.9, np.nan, 0.5, 0.4])
    med, low, high = bootstrap_median_ci(values, np.zeros(5), 200)
    assert med == low == high == pytest.approx(0.45)
    groups = np.array([0, 0, 1, 1, 2])
    assert bootstrap_median_ci(values, groups, 300) == _slow_bootstrap(values, groups, 300)
    assert np.isnan(bootstrap_median_ci([np.nan], [0], 10)).all()


def test_bootstrap_mean_ci():
    values = np.array([1.0, 0, 0, 1, 1, 0, np.nan])
    groups = np.array([0, 0, 1, 1, 2, 3, 3])
    est, low, high = bootstrap_mean_ci(values, groups, 500)
    assert est == pytest.approx(0.5) and 0 <= low <= est <= high <= 1
    assert bootstrap_mean_ci(values, np.zeros(7), 50)[1:] == (est, est)


# ---- summaries ----------------------------------------------------------------------------
def _table(rows):
    return pd.DataFrame(rows, columns=["label", "gt_area", "mask_area", "intersection"]).assign(
        dice=lambda t: seg._dice_iou_from_sums(t.intersection, t.mask_area, t.gt_area)[0],
        iou=lambda t: seg._dice_iou_from_sums(t.intersection, t.mask_area, t.gt_area)[1])


def test_summary_healthy_fp_rate_and_subsets():
    scores = _table([(0, 0, 0, 0), (0, 0, 30, 0), (0, 0, 0, 0), (0, 0, 5, 0),   # healthy
                     (1, 50, 50, 50), (1, 40, 0, 0), (2, 30, 20, 10), (2, 0, 10, 0)])
    pids = np.array(["a", "a", "b", "c", "a", "b", "c", "c"])
    out = segmentation_summary(scores, pids, ["Healthy", "LGG", "HGG"], n_resamples=200)
    get = out.set_index(["subset", "metric"])
    fp = get.loc[("healthy", "fp_rate")]
    assert fp["estimate"] == pytest.approx(0.5) and fp["n_slices"] == 4
    assert fp["n_patients"] == 3
    dice = get.loc[("tumour", "median_dice")]
    assert dice["estimate"] == pytest.approx(0.4) and dice["n_slices"] == 3  # 1, 0, 0.4
    assert get.loc[("tumour/LGG", "median_dice"), "estimate"] == pytest.approx(0.5)
    assert get.loc[("tumour/HGG", "median_dice"), "n_slices"] == 1
    assert get.loc[("tumour", "mean_dice"), "estimate"] == pytest.approx(1.4 / 3)
    assert (out["low"] <= out["estimate"] + 1e-12).all()
    assert (out["estimate"] <= out["high"] + 1e-12).all()


def test_patient_dice_3d_equals_stacked_masks():
    heat, probs, masks, labels = _dataset(15)
    scores = score_slices(heat, probs, masks, labels, 0.2)
    pids = np.repeat(["p1", "p2", "p3"], 5)
    out = patient_dice_3d(scores, pids).set_index("patient_id")
    for p in ("p1", "p2", "p3"):
        sel = np.flatnonzero(pids == p)
        pred = np.stack([np.zeros((H, W), bool) if probs[r].argmax() == 0
                         else heatmap_to_mask(heat[r, probs[r].argmax()], 0.2, True, H / 240)
                         for r in sel])
        assert out.loc[p, "dice_3d"] == pytest.approx(dice_iou(pred, masks[sel] > 0)[0])
    empty = scores.assign(gt_area=0, mask_area=0, intersection=0)
    assert patient_dice_3d(empty, pids)["dice_3d"].isna().all()


# ---- offset selection on validation data --------------------------------------------------
def _plateau_data(n=8, seed=0):
    """Tumour slices whose heatmap has 3 levels: noise in [0, 0.3) outside the tumour, 1.0 on
    its outer ring, 3.0 in its core. Multi-Otsu's upper threshold is ~1.0 (just above the
    ring), so offset 0 keeps the core only, offsets 0.1-0.7 (thr in (0.3, 0.9]) give the exact
    tumour, and offsets >= 0.8 take noise in too: the known best is 0.1 (smallest of the tie).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    heat = np.zeros((n, 2, H, W), np.float32)
    masks = np.zeros((n, H, W), np.uint8)
    for i in range(n):
        cy, cx = rng.integers(18, 30, 2)
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        heat[i, 1] = np.where(d2 <= 16, 3.0, np.where(d2 <= 64, 1.0, 0.0))
        heat[i, 1] += rng.uniform(0, 0.3, (H, W)) * (d2 > 64)  # low noise outside
        masks[i] = d2 <= 64
    probs = np.tile([0.1, 0.9], (n, 1))
    return heat, probs, masks, np.ones(n, int)


def test_select_offset_finds_known_best_and_tie_rules():
    heat, probs, masks, labels = _plateau_data()
    best, grid = select_offset(heat, probs, masks, labels, np.arange(8), cleanups=(False,))
    top = grid["median_dice"].max()
    assert top == pytest.approx(1.0)
    # smallest offset reaching the maximum (ties -> smaller offset)
    expected = grid.loc[grid["median_dice"] == top, "offset"].min()
    assert best == {"rule": "predicted", "in_brain": False, "threshold": "multiotsu", "offset": expected,
                    "cleanup": False, "median_dice": top, "median_dice_by_class": {"1": top}}
    assert best["offset"] == 0.1
    assert grid.set_index("offset").loc[0.0, "median_dice"] < 0.5
    assert grid.set_index("offset").loc[1.0, "median_dice"] < 0.5
    assert len(grid) == 21 and grid["n_patients"].eq(8).all()
    both, _ = select_offset(heat, probs, masks, labels, offsets=[best["offset"]])
    assert both["cleanup"] is True  # equal Dice with and without clean-up -> cleanup=True


def test_test_split_never_influences_the_choice():
    val = dict(zip(("heatmaps", "probabilities", "masks", "labels"), _plateau_data(6, 1)))
    val["patient_ids"] = np.arange(6)
    test = dict(zip(("heatmaps", "probabilities", "masks", "labels"), _dataset(9, 5, k=2)))
    test["patient_ids"] = np.repeat([10, 11, 12], 3)
    offsets = [0.0, 0.5, 1.0, 1.5, 2.0]
    ref, _ = select_offset(val["heatmaps"], val["probabilities"], val["masks"], val["labels"],
                           offsets=offsets)
    out = evaluate_with_validation_offset(val, test, offsets=offsets, n_resamples=100)
    assert out["choice"] == ref
    expected = score_slices(test["heatmaps"], test["probabilities"], test["masks"],
                            test["labels"], ref["offset"], ref["cleanup"])
    pd.testing.assert_frame_equal(out["scores"], expected)
    # arbitrary changes to the test data leave the choice unchanged
    rng = np.random.default_rng(9)
    test2 = dict(test, heatmaps=rng.normal(size=test["heatmaps"].shape).astype(np.float32),
                 masks=rng.integers(0, 2, test["masks"].shape))
    assert evaluate_with_validation_offset(val, test2, offsets=offsets,
                                           n_resamples=100)["choice"] == ref


def test_dice_per_slice_matches_dice_iou():
    from gpcore.evaluation.segmentation import dice_per_slice

    rng = np.random.default_rng(3)
    pred, gt = rng.random((6, 9, 7)) > 0.5, rng.random((6, 9, 7)) > 0.6
    pred[2] = gt[2] = False  # empty / empty: nan, as dice_iou
    expected = [dice_iou(p, g)[0] for p, g in zip(pred, gt)]
    np.testing.assert_array_equal(dice_per_slice(pred, gt), expected)
    assert dice_per_slice(pred[:0], gt[:0]).shape == (0,)
    with pytest.raises(ValueError, match="shapes differ"):
        dice_per_slice(pred, gt[:3])
