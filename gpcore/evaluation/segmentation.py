"""Weakly-supervised segmentation scores (``docs/spec/evaluation.md``, "Weakly-supervised
segmentation"; defects D7 and D9 of ``docs/spec/gp-models.md`` §8).

Inputs are what :func:`gpcore.inference.predict.predict_store` writes: ``heatmaps (N, K, H, W)``
(float16, usually memory-mapped), ``probabilities (N, K)``, plus the store's ground-truth
``masks (N, H, W)`` (BraTS sub-region labels allowed: tumour is ``masks > 0``) and the true
``labels (N,)``.

* :func:`score_slices` thresholds one heatmap channel per slice with the published rule
  (:mod:`gpcore.inference.threshold`) and writes one row per slice: areas, intersection,
  unsmoothed Dice and IoU.
* :func:`segmentation_summary`: median Dice / IoU over tumour slices with a patient-level
  bootstrap CI (percentile), per true class too, and the healthy-slice false-positive rate.
* :func:`patient_dice_3d`: per-patient 3D Dice from the per-slice sums (no masks kept).
* :func:`select_offset`: the offset / clean-up grid search, to run on **validation** patients
  only (D7); :func:`evaluate_with_validation_offset` freezes the choice and scores the test set.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Sequence

import numpy as np
import pandas as pd

from .bootstrap import bootstrap_mean_ci, bootstrap_median_ci
from ..inference.maps import MAP_RULES, check_rule, tumour_map
from ..inference.threshold import (THRESHOLDS, check_threshold, mask_from_rule,
                                          threshold_rule)

#: default grid of the relative threshold's fraction f (``threshold="relative"``)
DEFAULT_FRACTIONS = np.round(np.arange(0.1, 0.91, 0.1), 2)
#: default offset grid of :func:`select_offset`
DEFAULT_OFFSETS = np.round(np.arange(0, 2.01, 0.1), 2)
#: slices per work unit; bounds the memory read from memory-mapped inputs at once
CHUNK = 256
#: below this many masks (slices x settings) scoring stays in-process (pool start-up is not
#: worth it); the validation grid of a Figshare fold (~380 slices x 360 settings) is above it
PARALLEL_MIN = 2000


# --------------------------------------------------------------------------------------------
# Dice / IoU
# --------------------------------------------------------------------------------------------
def dice_iou(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Unsmoothed Dice ``2|A∩B| / (|A|+|B|)`` and IoU ``|A∩B| / |A∪B|`` of two ``(H, W)`` masks.

    A tumour slice with an empty prediction scores ``(0, 0)``; empty / empty is ``(nan, nan)``
    (excluded, never 1: D9).
    """
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {pred.shape} vs {gt.shape}")
    inter = np.count_nonzero(pred & gt)
    d, i = _dice_iou_from_sums(np.array([inter]), np.array([pred.sum()]), np.array([gt.sum()]))
    return float(d[0]), float(i[0])


def dice_per_slice(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Unsmoothed Dice of ``(N, H, W)`` mask stacks, slice by slice: ``(N,)`` (nan where both
    are empty), as :func:`dice_iou`."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {pred.shape} vs {gt.shape}")
    flat = (len(pred), int(np.prod(pred.shape[1:])))  # also for N = 0
    return _dice_iou_from_sums((pred & gt).reshape(flat).sum(1), pred.reshape(flat).sum(1),
                               gt.reshape(flat).sum(1))[0]


def pixel_auroc(score: np.ndarray, target: np.ndarray,
                region: np.ndarray | None = None) -> float:
    """Threshold-free localisation of one map: the probability that a random tumour pixel
    scores above a random non-tumour pixel (ties count half), over ``region`` (e.g. the
    brain) or the whole ``(H, W)`` slice. 0.5: the map does not tell tumour from the rest; nan
    when the region holds only one of the two. Mann-Whitney U from ranks."""
    from scipy.stats import rankdata

    score, target = np.asarray(score, np.float64), np.asarray(target, bool)
    if region is not None:
        region = np.asarray(region, bool)
        score, target = score[region], target[region]
    score, target = score.ravel(), target.ravel()
    n_pos = int(target.sum())
    n_neg = target.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[target].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def map_auroc_per_slice(heatmaps, masks, rows, rule: str = "evidence", brain=None,
                        healthy_class: int | None = 0, labels=None) -> np.ndarray:
    """:func:`pixel_auroc` of the ``rule`` map on the tumour slices ``rows`` of
    ``heatmaps (N, K, H, W)`` / ``masks (N, H, W)``, inside ``brain[row]`` when given:
    ``(len(rows),)``. Each slice's map is that of its true class ``labels[row]`` (``(N,)``);
    without ``labels``, that of the last tumour class (HGG) for every slice - which only the
    rules that combine every tumour map against Healthy do not depend on: without a Healthy
    class (Figshare) pass ``labels``, else a pituitary map is scored on glioma slices.
    Independent of the classification and of any threshold, it says whether the maps
    localise at all."""
    out = np.empty(len(rows))
    k_any = next(c for c in reversed(range(np.shape(heatmaps)[1])) if c != healthy_class)
    for i, r in enumerate(rows):
        k = k_any if labels is None else int(labels[r])
        hm = tumour_map(np.asarray(heatmaps[r], np.float32), k, rule, healthy_class)
        out[i] = (np.nan if hm is None else
                  pixel_auroc(hm, np.asarray(masks[r]) > 0, None if brain is None else brain[r]))
    return out


def _dice_iou_from_sums(inter, area_pred, area_gt) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise Dice and IoU from intersection and areas; nan where both areas are 0."""
    inter = np.asarray(inter, np.float64)
    total = np.asarray(area_pred, np.float64) + np.asarray(area_gt, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(total > 0, 2 * inter / total, np.nan)
        iou = np.where(total > 0, inter / (total - inter), np.nan)
    return dice, iou


def _score_range(data: dict, start: int, stop: int) -> dict:
    """Score ``data["rows"][start:stop]`` for every ``(rule, brain, threshold, offset,
    cleanup)`` of ``data["configs"]``.

    Returns ``pred, label, prob_pred, gt_area`` ``(n,)`` and ``mask_area, intersection``
    ``(C, n)``. Only the needed heatmap channels of each slice are read (memmaps stay cheap);
    the map and its threshold are computed once per (rule, brain, threshold) and serve every
    offset.
    """
    rows = data["rows"][start:stop]
    configs = data["configs"]
    probs = np.asarray(data["probabilities"][np.sort(rows)], np.float64)
    probs = probs[np.argsort(np.argsort(rows))]  # sorted memmap read, original order back
    pred = probs.argmax(1)
    label = np.asarray(data["labels"])[rows].astype(np.int64)
    n = len(rows)
    gt_area = np.zeros(n, np.int64)
    mask_area = np.zeros((len(configs), n), np.int64)
    inter = np.zeros((len(configs), n), np.int64)
    channel = pred if data["channel"] == "predicted" else label
    healthy = data["healthy_class"]
    maps = sorted({(rule, brain, method) for rule, brain, method, _, _ in configs})
    only_own = all(rule == "predicted" for rule, _, _ in maps)
    for i, r in enumerate(rows):
        gt = np.asarray(data["masks"][r]) > 0  # BraTS labels 1, 2, 4 -> whole tumour
        gt_area[i] = np.count_nonzero(gt)
        k = int(channel[i])
        if healthy is not None and k == healthy:
            continue  # a slice assigned to Healthy gets the empty mask
        hms = np.asarray(data["heatmaps"][r, k] if only_own else data["heatmaps"][r], np.float32)
        if not np.all(np.isfinite(hms)):
            raise ValueError(f"heatmap of row {r} contains NaN/Inf values")
        region = data["brain"][r] if data["brain"] is not None else None
        prepared = {}
        for rule, brain, method in maps:
            hm = hms if only_own else tumour_map(hms, k, rule, healthy)
            where = region if brain else None
            prepared[rule, brain, method] = (hm, threshold_rule(hm, where, method), where)
        for c, (rule, brain, method, offset, cleanup) in enumerate(configs):
            hm, thr, where = prepared[rule, brain, method]
            m = mask_from_rule(hm, thr, offset, cleanup, data["scale"], where)
            mask_area[c, i] = np.count_nonzero(m)
            inter[c, i] = np.count_nonzero(m & gt)
    return {"pred": pred, "label": label, "prob_pred": probs[np.arange(n), pred],
            "gt_area": gt_area, "mask_area": mask_area, "intersection": inter}


_SHARED: dict | None = None  # inputs inherited by forked workers (memmaps are not copied)


def _shared_range(start: int, stop: int) -> dict:
    return _score_range(_SHARED, start, stop)


def _score_configs(heatmaps, probabilities, masks, labels, configs, channel="predicted",
                   healthy_class=0, scale=None, rows=None, workers=None, brain=None) -> dict:
    """Score all slices for several ``(rule, brain, threshold, offset, cleanup)`` settings in
    one pass over the heatmaps; ``brain (N, H, W)`` bool is needed when a setting restricts
    to it."""
    global _SHARED
    if channel not in ("predicted", "true"):
        raise ValueError(f"channel must be 'predicted' or 'true', got {channel!r}")
    configs = [(check_rule(r), bool(b), check_threshold(t), float(o), bool(c))
               for r, b, t, o, c in configs]
    if brain is None and any(b for _, b, _, _, _ in configs):
        raise ValueError("a brain-restricted map rule needs the brain masks (brain=...); see "
                         "gpcore.inference.maps.brain_masks")
    if len(heatmaps.shape) != 4:
        raise ValueError(f"heatmaps must be (N, K, H, W), got shape {heatmaps.shape}")
    n_all, k, h, w = heatmaps.shape
    if tuple(probabilities.shape) != (n_all, k):
        raise ValueError(f"probabilities must be ({n_all}, {k}), got {probabilities.shape}")
    if tuple(masks.shape) != (n_all, h, w) or len(labels) != n_all:
        raise ValueError(f"masks must be ({n_all}, {h}, {w}) and labels ({n_all},); got "
                         f"{masks.shape} and {len(labels)}")
    if brain is not None and tuple(np.shape(brain)) != (n_all, h, w):
        raise ValueError(f"brain must be ({n_all}, {h}, {w}) bool masks, got {np.shape(brain)}")
    rows = np.arange(n_all) if rows is None else np.asarray(rows, np.int64).reshape(-1)
    data = {"heatmaps": heatmaps, "probabilities": probabilities, "masks": masks,
            "labels": np.asarray(labels), "rows": rows, "configs": list(configs),
            "channel": channel, "healthy_class": healthy_class, "brain": brain,
            "scale": h / 240 if scale is None else float(scale)}
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    use_pool = (workers > 1 and len(rows) * len(configs) > PARALLEL_MIN
                and "fork" in mp.get_all_start_methods())
    # a few chunks per worker, so that a few hundred slices still keep every worker busy
    chunk = max(1, min(CHUNK, -(-len(rows) // (4 * workers)))) if use_pool else CHUNK
    bounds = [(s, min(s + chunk, len(rows))) for s in range(0, len(rows), chunk)]
    if use_pool:
        # fork shares the inputs (memmaps re-read pages, arrays are copy-on-write); only the
        # (start, stop) pairs and the small per-chunk results cross process boundaries
        _SHARED = data
        try:
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
                parts = list(pool.map(_shared_range, *zip(*bounds)))
        finally:
            _SHARED = None
    else:
        parts = [_score_range(data, s, e) for s, e in bounds]
    out = {"row": rows}
    for key in ("pred", "label", "prob_pred", "gt_area"):
        out[key] = np.concatenate([p[key] for p in parts]) if parts else np.zeros(0)
    for key in ("mask_area", "intersection"):
        out[key] = (np.concatenate([p[key] for p in parts], axis=1) if parts
                    else np.zeros((len(configs), 0), np.int64))
    return out


def score_slices(heatmaps, probabilities, masks, labels, offset: float, cleanup: bool = True,
                 channel: str = "predicted", healthy_class: int | None = 0,
                 scale: float | None = None, rows: Sequence[int] | None = None,
                 workers: int | None = None, rule: str = "predicted", in_brain: bool = False,
                 brain: np.ndarray | None = None,
                 threshold: str = "multiotsu") -> pd.DataFrame:
    """Threshold one heatmap channel per slice and score it against the ground truth.

    Args:
        heatmaps: ``(N, K, H, W)``, any float dtype; may be a memmap (read slice by slice).
        probabilities: ``(N, K)`` class probabilities; ``pred`` is their argmax.
        masks: ``(N, H, W)`` ground truth; tumour is ``masks > 0`` (BraTS labels allowed).
        labels: ``(N,)`` true class indices.
        offset, cleanup, scale: as :func:`gpcore.inference.heatmap_to_mask`; ``scale``
            defaults to ``H / 240``.
        channel: ``"predicted"`` (as published) or ``"true"`` (the true class's channel).
            A slice whose channel class is ``healthy_class`` (predicted Healthy under
            "predicted", true Healthy under "true") gets the **empty mask**, as
            ``docs/spec/evaluation.md`` says; the reference instead thresholded its Healthy channel.
            ``healthy_class=None`` thresholds every channel.
        rows: score only these rows (default all), in this order.
        workers: processes (default ``os.cpu_count()``); used when more than
            :data:`PARALLEL_MIN` masks (slices x settings) are scored and ``fork`` is
            available.
        rule: the map rule (:data:`gpcore.inference.maps.MAP_RULES`): the predicted
            class's map (published), the sum of the tumour maps, or tumour-vs-healthy evidence.
        in_brain: threshold inside the brain only; needs ``brain (N, H, W)`` bool masks
            (:func:`gpcore.inference.maps.brain_masks`).
        threshold: ``"multiotsu"`` (published) or ``"relative"`` (``offset`` is then the
            fraction f; :mod:`gpcore.inference.threshold`).

    Returns:
        one row per slice: ``row, pred, label, prob_pred, gt_area, mask_area, intersection,
        dice, iou`` (Dice / IoU unsmoothed; nan when mask and ground truth are both empty).
    """
    res = _score_configs(heatmaps, probabilities, masks, labels,
                         [(rule, in_brain, threshold, offset, cleanup)], channel,
                         healthy_class, scale,
                         rows, workers, brain)
    return _table(res, 0)


def _table(res: dict, c: int) -> pd.DataFrame:
    dice, iou = _dice_iou_from_sums(res["intersection"][c], res["mask_area"][c], res["gt_area"])
    return pd.DataFrame({"row": res["row"], "pred": res["pred"], "label": res["label"],
                         "prob_pred": res["prob_pred"], "gt_area": res["gt_area"],
                         "mask_area": res["mask_area"][c],
                         "intersection": res["intersection"][c], "dice": dice, "iou": iou})




# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------
def segmentation_summary(scores: pd.DataFrame, patient_ids, class_names: Sequence[str] | None
                         = None, healthy_class: int | None = 0, n_resamples: int = 10000,
                         ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Median Dice / IoU (patient-bootstrap CI) and the healthy false-positive rate.

    Args:
        scores: a :func:`score_slices` table.
        patient_ids: ``(len(scores),)`` patient of each scored row, e.g.
            ``index["patient_id"].to_numpy()[scores["row"]]``.
        class_names: names of the class indices (e.g. ``["Healthy", "LGG", "HGG"]``).

    Returns:
        long table ``subset, metric, estimate, low, high, n_slices, n_patients, ci``.
        Subsets: ``tumour`` (every slice whose ground truth has tumour, whatever its
        prediction), ``tumour/<class>`` per true class, and ``healthy`` (empty ground truth
        and true label ``healthy_class``) with ``fp_rate``, the share of non-empty masks.
    """
    patient_ids = np.asarray(patient_ids).reshape(-1)
    if len(patient_ids) != len(scores):
        raise ValueError(f"patient_ids has {len(patient_ids)} entries for {len(scores)} rows")
    name = (lambda k: str(class_names[k])) if class_names is not None else str
    label_ci = f"patient bootstrap, percentile, {ci:.0%}, {n_resamples} resamples"
    gt, label = scores["gt_area"].to_numpy() > 0, scores["label"].to_numpy()
    rows = []

    def add(subset, metric, sel, values, fn):
        est, low, high = fn(values[sel], patient_ids[sel], n_resamples, ci, seed)
        rows.append({"subset": subset, "metric": metric, "estimate": est, "low": low,
                     "high": high, "n_slices": int(sel.sum()),
                     "n_patients": len(np.unique(patient_ids[sel])), "ci": label_ci})

    subsets = [("tumour", gt)] + [(f"tumour/{name(k)}", gt & (label == k))
                                  for k in np.unique(label[gt])]
    for subset, sel in subsets:
        add(subset, "median_dice", sel, scores["dice"].to_numpy(), bootstrap_median_ci)
        add(subset, "median_iou", sel, scores["iou"].to_numpy(), bootstrap_median_ci)
        add(subset, "mean_dice", sel, scores["dice"].to_numpy(), bootstrap_mean_ci)
    if healthy_class is not None:
        healthy = ~gt & (label == healthy_class)
        positive = (scores["mask_area"].to_numpy() > 0).astype(np.float64)
        add("healthy", "fp_rate", healthy, positive, bootstrap_mean_ci)
    return pd.DataFrame(rows)


def patient_dice_3d(scores: pd.DataFrame, patient_ids) -> pd.DataFrame:
    """Per-patient 3D Dice of the stacked slice masks, from the per-slice sums
    ``2 Σ|A∩B| / (Σ|A| + Σ|B|)`` (no masks needed; nan when both volumes are empty).

    ``scores`` must hold **all** slices of each patient (healthy ones too, i.e. ``rows=None``
    or a whole-patient selection); ``patient_ids`` is aligned with its rows.
    Returns ``patient_id, n_slices, gt_volume, mask_volume, intersection, dice_3d, iou_3d``.
    """
    table = pd.DataFrame({"patient_id": np.asarray(patient_ids).reshape(-1),
                          "gt_volume": scores["gt_area"].to_numpy(),
                          "mask_volume": scores["mask_area"].to_numpy(),
                          "intersection": scores["intersection"].to_numpy()})
    out = table.groupby("patient_id", sort=True).agg(
        n_slices=("gt_volume", "size"), gt_volume=("gt_volume", "sum"),
        mask_volume=("mask_volume", "sum"), intersection=("intersection", "sum")).reset_index()
    out["dice_3d"], out["iou_3d"] = _dice_iou_from_sums(out["intersection"], out["mask_volume"],
                                                        out["gt_volume"])
    return out


# --------------------------------------------------------------------------------------------
# Offset selection on validation patients (D7)
# --------------------------------------------------------------------------------------------
def select_offset(heatmaps, probabilities, masks, labels, patient_ids=None,
                  offsets: Sequence[float] = DEFAULT_OFFSETS,
                  cleanups: Sequence[bool] = (True, False), **kw) -> tuple[dict, pd.DataFrame]:
    """:func:`select_map_rule` over the published map only (predicted class, whole slice):
    the offset and clean-up switch maximising the validation median Dice."""
    return select_map_rule(heatmaps, probabilities, masks, labels, patient_ids, offsets,
                           cleanups, rules=("predicted",), in_brain=(False,), **kw)


def select_map_rule(heatmaps, probabilities, masks, labels, patient_ids=None,
                    offsets: Sequence[float] = DEFAULT_OFFSETS,
                    cleanups: Sequence[bool] = (True, False),
                    rules: Sequence[str] = MAP_RULES, in_brain: Sequence[bool] = (False, True),
                    class_names: Sequence[str] | None = None,
                    thresholds: Sequence[str] = ("multiotsu",),
                    fractions: Sequence[float] = DEFAULT_FRACTIONS,
                    **kw) -> tuple[dict, pd.DataFrame]:
    """Grid-search map rule, brain restriction, offset and clean-up switch maximising the
    median Dice over tumour slices. Pass **validation** data only: the choice is then frozen
    for the test set. ``in_brain=(..., True)`` needs ``brain=`` masks (in ``kw``).

    ``thresholds``: the threshold methods tried; ``"multiotsu"`` runs over ``offsets``,
    ``"relative"`` over ``fractions`` (recorded in the ``offset`` column). Ties go to the
    earlier rule of ``rules``, then the whole slice, the earlier threshold method, the smaller
    offset and ``cleanup=True``. ``kw``: ``channel``, ``healthy_class``, ``scale``, ``rows``, ``workers``,
    ``brain`` of :func:`score_slices`. ``patient_ids (N,)`` (optional) only adds the number of
    patients to the grid.

    Returns ``({"rule", "in_brain", "threshold", "offset", "cleanup", "median_dice",
    "median_dice_by_class"}, grid)`` with grid columns ``rule, in_brain, threshold, offset,
    cleanup,
    median_dice, mean_dice, n_slices[, n_patients]``.
    """
    if kw.get("brain") is None:
        in_brain = [b for b in in_brain if not b]
    grids = {"multiotsu": offsets, "relative": fractions}
    configs = [(r, bool(b), check_threshold(t), float(o), bool(c)) for r in rules
               for b in in_brain for t in thresholds for o in grids[t] for c in cleanups]
    if not configs:
        raise ValueError("select_map_rule needs at least one rule, offset and cleanup value")
    res = _score_configs(heatmaps, probabilities, masks, labels, configs, **kw)
    tumour = res["gt_area"] > 0
    grid = []
    for c, (rule, brain, method, offset, cleanup) in enumerate(configs):
        dice, _ = _dice_iou_from_sums(res["intersection"][c], res["mask_area"][c],
                                      res["gt_area"])
        d = dice[tumour]
        entry = {"rule": rule, "in_brain": brain, "threshold": method, "offset": offset,
                 "cleanup": cleanup,
                 "median_dice": float(np.median(d)) if len(d) else np.nan,
                 "mean_dice": float(d.mean()) if len(d) else np.nan, "n_slices": int(len(d))}
        if patient_ids is not None:
            entry["n_patients"] = len(np.unique(np.asarray(patient_ids)[res["row"][tumour]]))
        grid.append(entry)
    grid = pd.DataFrame(grid)
    if grid["median_dice"].isna().all():
        raise ValueError("no tumour slice in the selection data: cannot select an offset")
    # max median Dice; ties: earlier rule, whole slice, earlier threshold, smaller offset,
    # cleanup=True
    order = {r: i for i, r in enumerate(rules)}
    methods = {t: i for i, t in enumerate(THRESHOLDS)}
    ranked = grid.assign(_neg=-grid["median_dice"], _rule=grid["rule"].map(order),
                         _thr=grid["threshold"].map(methods),
                         _nocl=~grid["cleanup"]).sort_values(
        ["_neg", "_rule", "in_brain", "_thr", "offset", "_nocl"], kind="stable")
    best_i = int(ranked.index[0])
    best = grid.loc[best_i]
    dice, _ = _dice_iou_from_sums(res["intersection"][best_i], res["mask_area"][best_i],
                                  res["gt_area"])
    name = (lambda k: str(class_names[k])) if class_names is not None else str
    by_class = {name(k): float(np.median(dice[tumour & (res["label"] == k)]))
                for k in np.unique(res["label"][tumour])}
    return ({"rule": str(best["rule"]), "in_brain": bool(best["in_brain"]),
             "threshold": str(best["threshold"]),
             "offset": float(best["offset"]), "cleanup": bool(best["cleanup"]),
             "median_dice": float(best["median_dice"]), "median_dice_by_class": by_class},
            grid)


def evaluate_with_validation_offset(val: dict, test: dict, offsets=DEFAULT_OFFSETS,
                                    cleanups=(True, False), class_names=None,
                                    n_resamples: int = 10000, seed: int = 0,
                                    rules: Sequence[str] = ("predicted",),
                                    in_brain: Sequence[bool] = (False,),
                                    thresholds: Sequence[str] = ("multiotsu",),
                                    fractions: Sequence[float] = DEFAULT_FRACTIONS,
                                    **kw) -> dict:
    """Select the map rule, threshold, offset and clean-up on ``val``, freeze them, score
    ``test``.

    ``val`` / ``test``: dicts with ``heatmaps, probabilities, masks, labels, patient_ids``
    (``(N,)`` per row) and, for brain-restricted rules, ``brain (N, H, W)``. Only ``val``
    reaches :func:`select_map_rule`. Returns ``{"choice", "grid", "scores", "summary"}`` (the
    last two on ``test``).
    """
    keys = ("heatmaps", "probabilities", "masks", "labels")
    choice, grid = select_map_rule(*(val[k] for k in keys), val.get("patient_ids"),
                                   offsets=offsets, cleanups=cleanups, rules=rules,
                                   in_brain=in_brain, class_names=class_names,
                                   thresholds=thresholds, fractions=fractions,
                                   brain=val.get("brain"), **kw)
    scores = score_slices(*(test[k] for k in keys), offset=choice["offset"],
                          cleanup=choice["cleanup"], rule=choice["rule"],
                          in_brain=choice["in_brain"], brain=test.get("brain"),
                          threshold=choice["threshold"], **kw)
    pids = np.asarray(test["patient_ids"])[scores["row"].to_numpy()]
    summary = segmentation_summary(scores, pids, class_names,
                                   kw.get("healthy_class", 0), n_resamples, seed=seed)
    return {"choice": choice, "grid": grid, "scores": scores, "summary": summary}
