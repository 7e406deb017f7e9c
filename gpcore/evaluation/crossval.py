"""Cross-validated results: every fold of a study, their mean ± sd, and the pooled test patients
of all folds (each patient is in exactly one test fold), with patient-bootstrap CIs and the
paired difference to the all-brain mask (``docs/spec/evaluation.md``, "Robustness").

Inputs are evaluated run folders (``gpcore evaluate``): ``predictions/test/index.csv``,
``predictions/test/probabilities.npy`` and ``evaluation/segmentation_slices.csv``. The
all-brain (whole-head) mask - every non-zero input pixel - is scored on the same slices from
the slice store, so "localises" means "beats the trivial mask".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..inference.predict import read_predictions
from ..rundir import RunDir

#: a fold "localises" when its test median Dice is at least this multiple of the all-brain
#: mask's median Dice on the same slices (issue 13's target)
LOCALISES_RATIO = 2.0


def all_brain_dice(store, rows: np.ndarray) -> np.ndarray:
    """Slice Dice of the all-brain mask against the whole-tumour truth, ``(len(rows),)``."""
    from ..inference.maps import brain_masks
    from .segmentation import dice_per_slice

    rows = np.asarray(rows, np.int64)
    return dice_per_slice(brain_masks(store.images, rows), np.asarray(store.masks[rows]) > 0)


def run_test_slices(run) -> pd.DataFrame:
    """One row per test tumour slice of an evaluated run: ``patient_id, label, pred, dice,
    all_brain_dice`` (the run's validation-chosen mask rule)."""
    from ..data.store import SliceStore

    run = RunDir(run)
    index = read_predictions(run.predictions("test"))["index"]
    scores = run.evaluation_table("segmentation_slices")
    scores = scores[scores["gt_area"] > 0].reset_index(drop=True)
    store = SliceStore(run.store_path)
    base = all_brain_dice(store, index["row"].to_numpy()[scores["row"].to_numpy()])
    return pd.DataFrame({"patient_id": scores["patient_id"].astype(str), "label":
                         scores["label"], "pred": scores["pred"], "dice": scores["dice"],
                         "all_brain_dice": base})


def _macro_f1(run: RunDir) -> float:
    return float(run.evaluation_table("classification_summary")["f1_macro"].iloc[0])


def _ci(est, low, high) -> str:
    return "–" if not np.isfinite(est) else f"{est:.3f} [{low:.3f}, {high:.3f}]"


def cross_validation_tables(runs: dict, out_dir: str | Path, n_resamples: int = 2000,
                            label: str = "") -> dict[str, pd.DataFrame]:
    """Per-fold, over-fold and pooled tables of evaluated runs ``{(model, fold): RUN}``.

    Writes (CSV + Markdown) into ``out_dir``:

    * ``cv_folds``: one row per model and fold - test macro-F1, median Dice, the all-brain
      mask's median Dice on the same slices, their ratio, whether the fold localises
      (ratio >= :data:`LOCALISES_RATIO`), LGG-slice median Dice;
    * ``cv_summary``: one row per model - macro-F1 and median Dice mean ± sd over folds, folds
      localised, pooled macro-F1 over all test slices, pooled median Dice with a patient-
      bootstrap 95 % CI, paired Δ vs the all-brain mask with its CI, pooled LGG median Dice.
    """
    from ..io import write_table
    from .classification import pooled_metrics
    from .bootstrap import bootstrap_median_ci, bootstrap_median_difference_ci

    out = Path(out_dir)
    per_fold, summary = [], []
    models = list(dict.fromkeys(m for m, _ in runs))
    for model in models:
        folds = sorted(f for m, f in runs if m == model)
        slices, ys, probs = [], [], []
        for fold in folds:
            run = RunDir(runs[(model, fold)])
            classes = run.classes
            t = run_test_slices(run).assign(fold=fold)
            test = read_predictions(run.predictions("test"))
            ys.append(test["labels"])
            probs.append(test["probabilities"])
            lgg = classes.index("LGG") if "LGG" in classes else None
            med, base = float(np.median(t["dice"])), float(np.median(t["all_brain_dice"]))
            ratio = med / base if base > 0 else np.nan
            per_fold.append({
                "model": model, "fold": fold, "macro_f1": _macro_f1(run),
                "median_dice": med, "all_brain_median_dice": base, "ratio_vs_all_brain": ratio,
                "localises": bool(ratio >= LOCALISES_RATIO),
                "median_dice_lgg": float(np.median(t.loc[t["label"] == lgg, "dice"]))
                if lgg is not None and (t["label"] == lgg).any() else np.nan,
                "mask_rule": _rule(run), "n_slices": len(t),
                "n_patients": t["patient_id"].nunique()})
            slices.append(t)
        pooled = pd.concat(slices, ignore_index=True)
        groups = pooled["fold"].astype(str) + "/" + pooled["patient_id"]
        d = bootstrap_median_ci(pooled["dice"], groups, n_resamples)
        b = bootstrap_median_ci(pooled["all_brain_dice"], groups, n_resamples)
        delta = bootstrap_median_difference_ci(pooled["dice"], pooled["all_brain_dice"], groups,
                                               n_resamples, seed=0)
        folds_table = pd.DataFrame([r for r in per_fold if r["model"] == model])
        pooled_f1 = float(pooled_metrics(ys, probs, classes)["summary"]["f1_macro"].iloc[0])
        lgg_name = "LGG" if "LGG" in classes else None
        lgg_sel = pooled["label"] == (classes.index(lgg_name) if lgg_name else -1)
        lgg = bootstrap_median_ci(pooled.loc[lgg_sel, "dice"], groups[lgg_sel], n_resamples) \
            if lgg_sel.any() else (np.nan, np.nan, np.nan)
        summary.append({
            "model": model, "folds": len(folds),
            "macro_f1_mean": folds_table["macro_f1"].mean(),
            "macro_f1_sd": folds_table["macro_f1"].std(ddof=1) if len(folds) > 1 else np.nan,
            "median_dice_mean": folds_table["median_dice"].mean(),
            "median_dice_sd": folds_table["median_dice"].std(ddof=1) if len(folds) > 1
            else np.nan,
            "folds_localised": int(folds_table["localises"].sum()),
            "pooled_macro_f1": pooled_f1,
            "pooled_median_dice": d[0], "pooled_median_dice_low": d[1],
            "pooled_median_dice_high": d[2],
            "pooled_all_brain_median_dice": b[0],
            "pooled_delta_vs_all_brain": delta[0], "pooled_delta_low": delta[1],
            "pooled_delta_high": delta[2],
            "pooled_median_dice_lgg": lgg[0], "pooled_median_dice_lgg_low": lgg[1],
            "pooled_median_dice_lgg_high": lgg[2],
            "n_slices": len(pooled), "n_patients": int(groups.nunique()),
            "ci": f"patient bootstrap, percentile, 95%, {n_resamples} resamples"})
    folds_df, summary_df = pd.DataFrame(per_fold), pd.DataFrame(summary)
    if label:
        folds_df.insert(0, "run", label)
        summary_df.insert(0, "run", label)
    write_table(folds_df, out / "cv_folds")
    write_table(summary_df, out / "cv_summary")
    write_table(readable_summary(summary_df), out / "cv_summary_readable")
    return {"folds": folds_df, "summary": summary_df}


def readable_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """``cv_summary`` formatted for a README: estimates with CIs, mean ± sd."""
    rows = []
    for _, r in summary.iterrows():
        sd = (lambda v: "" if not np.isfinite(v) else f" ± {v:.3f}")
        rows.append({
            "model": r["model"],
            "macro-F1 (folds)": f"{r['macro_f1_mean']:.3f}{sd(r['macro_f1_sd'])}",
            "median Dice (folds)": f"{r['median_dice_mean']:.3f}{sd(r['median_dice_sd'])}",
            "folds localised": f"{int(r['folds_localised'])}/{int(r['folds'])}",
            "pooled macro-F1": f"{r['pooled_macro_f1']:.3f}",
            "pooled median Dice [95% CI]": _ci(r["pooled_median_dice"],
                                               r["pooled_median_dice_low"],
                                               r["pooled_median_dice_high"]),
            "Δ vs all-brain [95% CI]": _ci(r["pooled_delta_vs_all_brain"],
                                           r["pooled_delta_low"], r["pooled_delta_high"]),
            "LGG median Dice [95% CI]": _ci(r["pooled_median_dice_lgg"],
                                            r["pooled_median_dice_lgg_low"],
                                            r["pooled_median_dice_lgg_high"]),
            "all-brain median Dice": f"{r['pooled_all_brain_median_dice']:.3f}",
            "patients": int(r["n_patients"])})
    return pd.DataFrame(rows)


def _rule(run: RunDir) -> str:
    from ..inference.maps import MaskRule

    return MaskRule.from_choice(run.offset_choice()).describe()
