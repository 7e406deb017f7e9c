"""Cross-validated tables (gpcore.evaluation.crossval) over evaluated run folders of two folds,
checked against numbers computed here directly; and the --folds plumbing of the study."""
import numpy as np
import pandas as pd
import pytest
import yaml

from gpcore.data.store import build_store
from gpcore.evaluation.crossval import cross_validation_tables
from gpcore.evaluation.bootstrap import bootstrap_median_ci
from gpcore.evaluation.segmentation import score_slices
from gpcore.study.pipeline import parse_folds, study_plan
from gpcore.inference.maps import brain_mask
from fake_data import fake_subject

SIZE = 32


def _write_run(root, store, model, fold, patients, seed):
    """A run folder as `gpcore evaluate` leaves it, with blob heatmaps on the truth."""
    run = root / model / f"fold{fold}"
    (run / "predictions" / "test").mkdir(parents=True)
    (run / "evaluation").mkdir()
    index = store.index[store.index.patient_id.isin(patients)].reset_index(drop=True)
    n, rng = len(index), np.random.default_rng(seed)
    labels = index.label.to_numpy()
    prob = np.full((n, 3), 0.1)
    prob[np.arange(n), labels] = 0.8
    yy, xx = np.mgrid[:SIZE, :SIZE]
    heat = rng.normal(0, 0.05, (n, 3, SIZE, SIZE)).astype(np.float32)
    for i, r in enumerate(index.row):
        gt = np.asarray(store.masks[r]) > 0
        if gt.any():
            cy, cx = np.argwhere(gt).mean(0)
            heat[i, labels[i]] += 2 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0)
    index.to_csv(run / "predictions/test/index.csv", index=False)
    np.save(run / "predictions/test/probabilities.npy", prob.astype(np.float32))
    np.save(run / "predictions/test/heatmaps.npy", heat.astype(np.float16))
    (run / "predictions/test/predict.json").write_text("{}\n")  # marks complete predictions
    scores = score_slices(heat, prob, np.asarray(store.masks[index.row.to_numpy()]), labels,
                          0.3, workers=1)
    scores.assign(patient_id=index.patient_id.to_numpy()[scores.row]).to_csv(
        run / "evaluation/segmentation_slices.csv", index=False)
    pd.DataFrame([{"f1_macro": 0.5 + 0.1 * fold}]).to_csv(
        run / "evaluation/classification_summary.csv", index=False)
    (run / "evaluation/offset_choice.json").write_text(
        '{"rule": "evidence", "in_brain": true, "offset": 0.3, "cleanup": true}')
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"store": {"path": str(store.path)}, "classes": list(store.classes)}))
    return run, scores.assign(patient_id=index.patient_id.to_numpy()[scores.row])


def test_cross_validation_tables_match_direct_computation(tmp_path):
    subjects = [fake_subject(i, "HGG" if i % 2 else "LGG") for i in range(1, 7)]
    store = build_store(subjects, tmp_path / "store", source={"kind": "test"}, size=SIZE,
                        channels=("t1", "t2", "t1ce", "flair"), workers=1, progress=False)
    pids = sorted(store.index.patient_id.unique())
    runs, pooled = {}, []
    for fold, part in enumerate((pids[:3], pids[3:])):
        run, scores = _write_run(tmp_path / "runs", store, "gp_unet", fold, part, fold)
        runs[("gp_unet", fold)] = run
        pooled.append(scores[scores.gt_area > 0].assign(fold=fold))
    out = cross_validation_tables(runs, tmp_path / "cv", n_resamples=200, label="test")
    folds, summary = out["folds"], out["summary"].iloc[0]
    pooled = pd.concat(pooled, ignore_index=True)
    # the all-brain mask's Dice, computed here from the store
    index = {f: pd.read_csv(runs[("gp_unet", f)] / "predictions/test/index.csv")
             for f in (0, 1)}
    base = []
    for fold, row in zip(pooled.fold, pooled.row):
        r = index[fold]["row"].iat[row]
        b, gt = brain_mask(store.images[r]), np.asarray(store.masks[r]) > 0
        base.append(2 * (b & gt).sum() / (b.sum() + gt.sum()))
    for fold in (0, 1):
        sel = pooled.fold == fold
        f = folds[folds.fold == fold].iloc[0]
        assert f["median_dice"] == pytest.approx(np.median(pooled.dice[sel]))
        assert f["all_brain_median_dice"] == pytest.approx(np.median(np.asarray(base)[sel]))
        assert f["localises"] == (f["median_dice"] >= 2 * f["all_brain_median_dice"])
        assert f["mask_rule"] == "evidence, brain, 0.3 +clean"
    assert summary["macro_f1_mean"] == pytest.approx(0.55)
    assert summary["median_dice_mean"] == pytest.approx(folds.median_dice.mean())
    groups = pooled.fold.astype(str) + "/" + pooled.patient_id
    est, low, high = bootstrap_median_ci(pooled.dice, groups, 200)
    assert (summary["pooled_median_dice"], summary["pooled_median_dice_low"],
            summary["pooled_median_dice_high"]) == pytest.approx((est, low, high))
    assert summary["pooled_delta_vs_all_brain"] == pytest.approx(
        np.median(pooled.dice) - np.median(base))
    assert summary["n_patients"] == len(pids)
    for name in ("cv_folds", "cv_summary", "cv_summary_readable"):
        assert (tmp_path / "cv" / f"{name}.csv").is_file()
        assert (tmp_path / "cv" / f"{name}.md").is_file()


def test_folds_option_parses_and_checks_range():
    assert parse_folds("all", 5) == [0, 1, 2, 3, 4]
    assert parse_folds("2,0", 5) == [0, 2]
    with pytest.raises(ValueError, match="out of range"):
        parse_folds("0,7", 5)
    with pytest.raises(ValueError, match="comma-separated"):
        parse_folds("first", 5)
    assert study_plan("quick")["folds"] == [0]  # the default study stays one fold
    assert study_plan("quick", "all")["folds"] == [0, 1, 2, 3, 4]
    assert study_plan("quick", "0,2")["folds"] == [0, 2]


def test_run_all_rejects_bad_folds():
    from gpcore.study.runner import main

    with pytest.raises(SystemExit, match="--folds"):
        main(["--folds", "9", "--stage", "models"])
