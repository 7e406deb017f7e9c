"""How far a run's maps are from segmenting: validation patients only (issue 13, Figshare).

    python -m experiments.map_ceiling RUN [RUN ...] --out docs/recipe7_ceiling

Per run and per true class, on the fold's **validation** tumour slices, inside the head /
brain (non-zero input):

* ``auroc_own`` - median per-slice pixel AUROC of the true class's map (threshold-free: does
  the map rank tumour pixels above the rest of the head at all?); ``auroc_intensity`` - the
  same for the first input contrast itself (T1-CE on Figshare, where enhancing tumours are
  bright): what a map that only follows intensity would reach;
* ``tumour_share`` - median tumour area / head area: the prior a threshold has to beat;
* ``dice_multiotsu`` - median Dice of the true class's map cut at its top multi-Otsu level
  inside the head; ``dice_ceiling`` - median over slices of the best Dice any per-slice
  percentile cut reaches (an *oracle*, a ceiling for every threshold rule on that map);
* ``dice_mask_head`` - Dice of the head itself as the mask (the baseline a map must beat);
* ``*_inner{d}`` - the same inside the head eroded by ``d`` x its equivalent radius (a crude
  brain: the scalp and skull of a whole-head slice left out), with ``tumour_kept{d}`` the share
  of the tumour that erosion keeps and ``dice_mask_inner{d}`` the Dice of the eroded head
  itself: is restricting the map to the brain, not the head, a lever?

Classification does not enter (the true class's map is scored): this measures the maps.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

#: per-slice percentile cuts the ceiling searches
PERCENTILES = (50, 70, 80, 85, 90, 93, 95, 97, 98, 99, 99.5)
#: erosion depths, as shares of the head's equivalent radius sqrt(area / pi)
INNER_DEPTHS = (0.1, 0.2, 0.3)


def inner_head(head: np.ndarray, depth: float) -> np.ndarray:
    """``(H, W)`` bool head -> the pixels farther than ``depth`` x its equivalent radius from
    its border (distance transform)."""
    from scipy import ndimage as ndi

    radius = np.sqrt(head.sum() / np.pi)
    return ndi.distance_transform_edt(head) > depth * radius


def slice_scores(score: np.ndarray, gt: np.ndarray, head: np.ndarray) -> dict:
    """``score, gt, head (H, W)`` -> AUROC, multi-Otsu Dice and percentile-oracle Dice."""
    from skimage.filters import threshold_multiotsu

    from gpcore.evaluation.segmentation import dice_iou, pixel_auroc

    v = score[head]
    try:
        top = threshold_multiotsu(v, 3)[-1]
    except ValueError:  # a constant map: no levels
        top = np.inf
    cuts = np.percentile(v, PERCENTILES)
    return {"auroc": pixel_auroc(score, gt, head),
            "dice_multiotsu": dice_iou((score > top) & head, gt)[0],
            "dice_ceiling": max(dice_iou((score > c) & head, gt)[0] for c in cuts)}


def ceiling(run: Path) -> pd.DataFrame:
    """One row per true class (and ``all``) of ``run``'s validation tumour slices."""
    from gpcore.evaluation.segmentation import dice_iou

    from .recipe import validation

    val = validation(run)
    rows, labels = val["index"]["row"].to_numpy(), val["labels"].astype(int)
    records = []
    for i, (row, k) in enumerate(zip(rows, labels)):
        gt = np.asarray(val["masks"][i]) > 0
        head = val["brain"][i]
        if not gt.any() or gt.all():
            continue
        hm = np.asarray(val["heatmaps"][i][k], np.float32)
        own = slice_scores(hm, gt, head)
        img = slice_scores(np.asarray(val["store"].images[row][0], np.float32), gt, head)
        record = {"class": val["classes"][k], "tumour_share": gt.sum() / head.sum(),
                  "auroc_own": own["auroc"], "auroc_intensity": img["auroc"],
                  "dice_multiotsu": own["dice_multiotsu"],
                  "dice_ceiling": own["dice_ceiling"],
                  "dice_ceiling_intensity": img["dice_ceiling"],
                  "dice_mask_head": dice_iou(head, gt)[0]}
        for d in INNER_DEPTHS:
            inner = inner_head(head, d)
            if not inner.any():
                continue
            record[f"tumour_kept{d:g}"] = (gt & inner).sum() / gt.sum()
            record[f"dice_mask_inner{d:g}"] = dice_iou(inner, gt)[0]
            scores = slice_scores(hm, gt, inner)
            record[f"dice_ceiling_inner{d:g}"] = scores["dice_ceiling"]
            record[f"dice_multiotsu_inner{d:g}"] = scores["dice_multiotsu"]
        records.append(record)
    per_slice = pd.DataFrame(records)
    table = pd.concat([per_slice, per_slice.assign(**{"class": "all"})])
    out = table.groupby("class", sort=False).median(numeric_only=True)
    out.insert(0, "slices", table.groupby("class", sort=False).size())
    return out.reset_index().assign(run=str(run))


def main(argv=None) -> int:
    from .run_tables import main as run_tables

    return run_tables("python -m experiments.map_ceiling", __doc__, ceiling, argv)


if __name__ == "__main__":
    sys.exit(main())
