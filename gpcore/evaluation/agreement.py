"""Agreement between two explanation maps of the same slice (e.g. a GP heatmap and the
occlusion or guided-backprop map of the same model and target), inside the brain mask.

* Pearson and Spearman correlation of the two maps over brain pixels;
* top-k % IoU: IoU of the k % highest-valued brain pixels of each map;
* pointing game: does the peak of the map fall inside the ground-truth tumour (per map).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr


def _brain_values(a, b, brain):
    a, b, brain = np.asarray(a, float), np.asarray(b, float), np.asarray(brain, bool)
    if a.shape != b.shape or a.shape != brain.shape:
        raise ValueError(f"map shapes differ: {a.shape}, {b.shape}, brain {brain.shape}")
    return a[brain], b[brain]


def correlations(a, b, brain) -> tuple[float, float]:
    """Pearson and Spearman of maps ``a``, ``b`` ``(H, W)`` over ``brain`` pixels; nan when a
    map is constant there (no ranking to compare)."""
    x, y = _brain_values(a, b, brain)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    return float(pearsonr(x, y).statistic), float(spearmanr(x, y).statistic)


def top_k_iou(a, b, brain, k: float = 0.1) -> float:
    """IoU of the top ``k`` fraction of brain pixels of each map (ties: a stable rank)."""
    x, y = _brain_values(a, b, brain)
    n = max(1, int(round(k * len(x))))
    top_x = set(np.argsort(-x, kind="stable")[:n])
    top_y = set(np.argsort(-y, kind="stable")[:n])
    return len(top_x & top_y) / len(top_x | top_y)


def pointing_game(a, tumour) -> bool | None:
    """True if the maximum of map ``a`` lies in the tumour mask; None on a tumour-free slice."""
    tumour = np.asarray(tumour) > 0
    if not tumour.any():
        return None
    return bool(tumour.flat[int(np.argmax(np.asarray(a)))])
