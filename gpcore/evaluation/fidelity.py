"""Confidence vs fidelity: does a confident classification come with a good heatmap mask?

Spearman's rank correlation between the predicted-class probability and the slice Dice over
the tumour slices, with a 95 % CI from a patient-level percentile bootstrap (patients are
resampled with replacement, as for the Dice CI), and a binned figure.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from .bootstrap import bootstrap_statistic_ci


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3:
        return float("nan")
    rx, ry = rankdata(x), rankdata(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def confidence_fidelity(scores: pd.DataFrame, patient_ids, n_resamples: int = 10000,
                        ci: float = 0.95, seed: int = 0) -> dict:
    """``scores``: the slice table of ``score_slices`` (``prob_pred``, ``dice``, ``gt_area``);
    ``patient_ids`` aligned with it. Returns ``{"spearman", "low", "high", "n_slices",
    "n_patients", "ci"}`` over tumour slices with a Dice."""
    keep = (scores["gt_area"].to_numpy() > 0) & np.isfinite(scores["dice"].to_numpy())
    x = scores["prob_pred"].to_numpy()[keep]
    y = scores["dice"].to_numpy()[keep]
    groups = np.asarray(patient_ids)[keep]
    estimate = _spearman(x, y)
    low, high, n_patients = bootstrap_statistic_ci(lambda idx: _spearman(x[idx], y[idx]),
                                                   groups, n_resamples, ci, seed)
    return {"spearman": estimate, "low": float(low), "high": float(high),
            "n_slices": int(keep.sum()), "n_patients": n_patients,
            "ci": f"patient bootstrap, percentile, {ci:.0%}, {n_resamples} resamples"}


def plot_confidence_dice(scores: pd.DataFrame, result: dict, title: str, bins: int = 5):
    """Scatter of slice Dice against predicted-class probability, with the median Dice and
    inter-quartile range per probability quantile bin."""
    import matplotlib.pyplot as plt

    tumour = scores[(scores["gt_area"] > 0) & scores["dice"].notna()]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.scatter(tumour["prob_pred"], tumour["dice"], s=4, alpha=0.3, color="tab:grey")
    # a model that gives every slice the same confidence leaves no bins to draw
    if len(tumour) >= bins and tumour["prob_pred"].nunique() >= 2:
        cut = pd.qcut(tumour["prob_pred"], bins, duplicates="drop")
        grouped = tumour.groupby(cut, observed=True)
        centre = grouped["prob_pred"].median()
        q = grouped["dice"].quantile([0.25, 0.5, 0.75]).unstack()
        ax.errorbar(centre, q[0.5], yerr=[q[0.5] - q[0.25], q[0.75] - q[0.5]], fmt="o-",
                    color="tab:red", capsize=3, label="median Dice per bin (IQR)")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xlabel("predicted-class probability")
    ax.set_ylabel("slice Dice (tumour slices)")
    ax.set_ylim(0, 1)
    ax.set_title(f"{title}\nSpearman {result['spearman']:.2f} "
                 f"[{result['low']:.2f}, {result['high']:.2f}]", fontsize=8)
    fig.tight_layout()
    return fig


def example_rows(scores: pd.DataFrame, classes) -> list[tuple[str, str, int]]:
    """(class, "best"/"median"/"worst", row position in ``scores``) for the tumour slices of
    each true class, by Dice."""
    out = []
    tumour = scores[(scores["gt_area"] > 0) & scores["dice"].notna()]
    for label, name in enumerate(classes):
        part = tumour[tumour["label"] == label].sort_values("dice", kind="stable")
        if part.empty:
            continue
        picks = {"best": part.index[-1], "median": part.index[len(part) // 2],
                 "worst": part.index[0]}
        out += [(name, which, int(pos)) for which, pos in picks.items()]
    return out


def plot_example_grid(scores: pd.DataFrame, images, heatmaps, masks, classes, rule,
                      title: str, channel: int = 0, healthy_class: int | None = 0):
    """Rows: best, median and worst test slice of each class. Columns: image, the map that
    ``rule`` (a :class:`~gpcore.inference.maps.MaskRule`) thresholds, thresholded mask,
    with the ground-truth contour on each."""
    import matplotlib.pyplot as plt

    picks = example_rows(scores, classes)
    fig, axes = plt.subplots(max(1, len(picks)), 3, figsize=(6.6, 2.2 * max(1, len(picks))),
                             squeeze=False)
    for row_axes, (name, which, pos) in zip(axes, picks):
        r = scores.loc[pos]
        i = int(r["row"])
        slice_images = np.asarray(images[i], np.float32)
        img = slice_images[channel]
        hms, k = np.asarray(heatmaps[i], np.float32), int(r["pred"])
        hm = rule.map(hms, k, healthy_class)
        hm = hms[k] if hm is None else hm
        pred = rule.mask(hms, k, healthy_class, image=slice_images) \
            if r["mask_area"] > 0 else np.zeros(hm.shape, bool)
        gt = np.asarray(masks[i]) > 0
        for ax, shown, cmap in zip(row_axes, (img, hm, img), ("gray", "inferno", "gray")):
            ax.imshow(shown, cmap=cmap, interpolation="nearest")
            ax.contour(gt, levels=[0.5], colors="cyan", linewidths=0.8)
            ax.set_axis_off()
        if pred.any():
            row_axes[2].contour(pred, levels=[0.5], colors="red", linewidths=0.8)
        row_axes[0].set_title(f"{name}, {which}: Dice {r['dice']:.2f}", fontsize=7)
        row_axes[1].set_title(f"{rule.rule} map ({classes[int(r['pred'])]})", fontsize=7)
        row_axes[2].set_title("mask (red), truth (cyan)", fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig
