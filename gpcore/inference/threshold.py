"""Heatmap -> tumour mask, as published (``docs/spec/gp-models.md`` §10, steps 1-4).

* **Threshold.** ``t_hi = threshold_multiotsu(hm, classes=3, nbins=256)[-1]`` on the raw map
  (negative values included, no ReLU, no normalisation), ``thr = max(0, t_hi - offset)``,
  ``mask = hm > thr``. If the map has fewer than 3 distinct values, or multi-Otsu raises:
  ``thr = threshold_otsu(hm)`` with no offset and no floor; a constant map, or one with no
  positive value, gives an empty mask (the published fallback would have thresholded an
  all-negative two-valued map inside its range).
* **Clean-up**, in this order: remove 4-connected objects with area < 64 px; fill 4-connected
  holes (background components) with area < 128 px; binary closing with ``disk(2)``; keep the
  largest 8-connected component (ties: the lowest label).

Beside the published threshold (``"multiotsu"``), a **relative** one (``"relative"``, not in
the paper; chosen on validation like the offset): ``thr = median + f * (max - median)`` of the
map over the region, ``f`` in (0, 1) taking the place of the offset. It follows the map's own
peak, so a weak spot gets a small mask where multi-Otsu, which splits the histogram, often
takes the brain-wide plateau (docs/recipe.md, cause 3). A constant map gives an empty mask.

The size filters are written out here (``scipy.ndimage.label`` + ``bincount``) rather than
taken from ``skimage.morphology``: the "strictly smaller than" semantics are those of
scikit-image < 0.26, whose deprecated ``min_size`` / ``area_threshold`` arguments behave
differently in 0.26 (objects / holes of exactly that size were observed to go too).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: offsets in effect in the reference code (``utils.py``), by model name
PUBLISHED_OFFSETS: dict[str, float] = {
    "gp_unet": 0.3,
    "gp_recon_resnet": 1.6,
    # The reference meant 0.1 for GP-ShuffleUNet, but that branch is dead code (defect D8):
    # the value it actually used, and that the published numbers come from, is 0.3.
    "gp_shuffle_unet": 0.3,
}

#: published clean-up sizes at 240 x 240 (pixels)
MIN_OBJECT_AREA = 64
MIN_HOLE_AREA = 128
CLOSING_RADIUS = 2

#: threshold methods, in the order the validation grid tries them (ties: the earlier one)
THRESHOLDS = ("multiotsu", "relative")

_FOUR = ndi.generate_binary_structure(2, 1)
_EIGHT = ndi.generate_binary_structure(2, 2)


def check_threshold(method: str) -> str:
    if method not in THRESHOLDS:
        raise ValueError(f"threshold must be one of {THRESHOLDS}, got {method!r}")
    return method


def threshold_rule(heatmap: np.ndarray, region: np.ndarray | None = None,
                   method: str = "multiotsu") -> tuple[str, object]:
    """The offset-independent part of the threshold of one map ``(H, W)``:
    ``("multi", t_hi)`` (upper multi-Otsu threshold), ``("otsu", t)`` (fallback),
    ``("relative", (median, max))`` (``method="relative"``) or ``("empty", nan)``. Computed
    once, it serves a whole grid of offsets. ``region`` (bool ``(H, W)``): compute it over
    those pixels only (the brain; empty region: empty mask)."""
    from skimage.filters import threshold_multiotsu, threshold_otsu

    check_threshold(method)
    hm = _as_float(heatmap)
    if region is not None:
        hm = hm[np.asarray(region, bool)]
        if hm.size == 0:
            return "empty", float("nan")
    lo, hi = hm.min(), hm.max()
    if method == "relative":
        return ("empty", float("nan")) if lo == hi else \
            ("relative", (float(np.median(hm)), float(hi)))
    # constant, or all non-positive: the multi-Otsu path's floor at 0 would leave nothing, and
    # the Otsu fallback must not turn a map without positive evidence into a tumour
    if lo == hi or hi <= 0:
        return "empty", float("nan")
    # "at least 3 distinct values" without np.unique's sort (the costliest step otherwise)
    if np.any((hm > lo) & (hm < hi)):
        try:
            return "multi", float(threshold_multiotsu(hm, classes=3, nbins=256)[-1])
        except ValueError:  # e.g. fewer than 3 distinct values after binning
            pass
    return "otsu", float(threshold_otsu(hm))


def threshold_value(heatmap: np.ndarray, offset: float = 0.3) -> float | None:
    """The threshold ``thr`` of :func:`heatmap_to_mask` (``mask = hm > thr``); ``None`` when
    the mask is empty whatever the threshold (constant or all non-positive map)."""
    return rule_threshold(threshold_rule(heatmap), offset)


def rule_threshold(rule: tuple[str, object], offset: float) -> float | None:
    """The threshold ``thr`` (``mask = hm > thr``) of a :func:`threshold_rule` at ``offset``
    (for ``"relative"``: the fraction f); ``None`` for the empty mask."""
    kind, t = rule
    if kind == "empty":
        return None
    if kind == "relative":  # offset: the fraction f of the way from the median to the peak
        return t[0] + float(offset) * (t[1] - t[0])
    return max(0.0, t - float(offset)) if kind == "multi" else t


def mask_from_rule(heatmap: np.ndarray, rule: tuple[str, object], offset: float,
                   cleanup: bool = True, scale: float = 1.0,
                   region: np.ndarray | None = None) -> np.ndarray:
    """The mask of :func:`heatmap_to_mask` from a precomputed :func:`threshold_rule`;
    ``region``: nothing outside it is marked (before the clean-up)."""
    thr = rule_threshold(rule, offset)
    if thr is None:
        return np.zeros(np.shape(heatmap), bool)
    mask = np.asarray(heatmap) > thr
    if region is None:
        return clean_mask(mask, scale) if cleanup else mask
    region = np.asarray(region, bool)
    mask &= region
    return clean_mask(mask, scale) & region if cleanup else mask


def heatmap_to_mask(heatmap: np.ndarray, offset: float = 0.3, cleanup: bool = True,
                    scale: float = 1.0, region: np.ndarray | None = None) -> np.ndarray:
    """Threshold one heatmap channel ``(H, W)`` into a boolean mask ``(H, W)``.

    Args:
        heatmap: the raw heatmap of one class (usually the predicted one).
        offset: subtracted from the upper multi-Otsu threshold (see :data:`PUBLISHED_OFFSETS`).
        cleanup: apply the published clean-up (see :func:`clean_mask`).
        scale: pixel-size factor of the clean-up for slices resized from 240 x 240
            (``size / 240``): areas scale with ``scale**2``, the closing radius with ``scale``.
        region: bool ``(H, W)``, e.g. the brain: threshold computed over it, mask inside it.
    """
    hm = _as_float(heatmap)
    if hm.ndim != 2:
        raise ValueError(f"heatmap_to_mask expects one (H, W) heatmap channel, got shape "
                         f"{hm.shape}; select a channel first (see heatmap_channel)")
    if not np.all(np.isfinite(hm)):
        raise ValueError("heatmap contains NaN/Inf values; check the model's outputs")
    return mask_from_rule(hm, threshold_rule(hm, region), offset, cleanup, scale, region)


def clean_mask(mask: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The published clean-up of a boolean mask, sizes scaled by ``scale`` (1 at 240 x 240).

    Computed on the mask's bounding box plus a margin (the result is identical, see
    :func:`_clean_box`): a tumour-sized mask is a small part of the slice, and the validation
    grid cleans hundreds of thousands of them."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    mask = np.asarray(mask, bool)
    if not mask.any():
        return mask.copy()
    radius = max(1, int(round(CLOSING_RADIUS * scale)))
    hole_area = MIN_HOLE_AREA * scale ** 2
    box, open_sides = _clean_box(mask, 2 * radius + 2, hole_area)
    part = remove_small_objects(mask[box], MIN_OBJECT_AREA * scale ** 2)
    part = fill_small_holes(part, hole_area, open_sides)
    part = largest_component(closing(part, radius))
    out = np.zeros(mask.shape, bool)
    out[box] = part
    return out


def _clean_box(mask: np.ndarray, margin: int, hole_area: float
               ) -> tuple[tuple[slice, slice], tuple[bool, bool, bool, bool]]:
    """The box of :func:`clean_mask`: the mask's bounding box grown by ``margin`` px (clipped
    to the slice), and which of its sides (top, bottom, left, right) lie inside the slice.

    Why the clean-up is unchanged on it: objects are inside the box; a band of ``margin``
    background pixels lines every inner side, so the closing (``margin >= 2 r + 2``) never
    reaches past it; a background component touching an inner side continues outside the box
    over at least one whole row or column of the slice, so it is never a small hole when
    ``min(H, W) >= hole_area`` (otherwise the box is the whole slice)."""
    h, w = mask.shape
    if min(h, w) < hole_area:
        return (slice(0, h), slice(0, w)), (False, False, False, False)
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    y0, y1 = max(rows[0] - margin, 0), min(rows[-1] + margin + 1, h)
    x0, x1 = max(cols[0] - margin, 0), min(cols[-1] + margin + 1, w)
    return (slice(y0, y1), slice(x0, x1)), (y0 > 0, y1 < h, x0 > 0, x1 < w)


def remove_small_objects(mask: np.ndarray, min_area: float) -> np.ndarray:
    """Drop 4-connected foreground components with area strictly below ``min_area``."""
    labels, n = ndi.label(mask, structure=_FOUR)
    if n == 0:
        return np.zeros(mask.shape, bool)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_area
    keep[0] = False
    return keep[labels]


def fill_small_holes(mask: np.ndarray, max_area: float,
                     open_sides: tuple[bool, bool, bool, bool] = (False,) * 4) -> np.ndarray:
    """Fill 4-connected background components with area strictly below ``max_area`` (as
    ``remove_small_holes``: a component touching the border counts too).

    ``open_sides`` (top, bottom, left, right): sides of a crop that continue into a larger
    background; components touching them are never filled."""
    labels, n = ndi.label(~mask, structure=_FOUR)
    if n == 0:
        return mask.copy()
    sizes = np.bincount(labels.ravel())
    fill = sizes < max_area
    fill[0] = False
    for is_open, edge in zip(open_sides, (labels[0], labels[-1], labels[:, 0], labels[:, -1])):
        if is_open:
            fill[edge] = False
    return mask | fill[labels]


def _disk(radius: int) -> np.ndarray:
    """``skimage.morphology.disk(radius)``."""
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius ** 2


def closing(mask: np.ndarray, radius: int = CLOSING_RADIUS) -> np.ndarray:
    """Binary closing with ``disk(radius)``: dilation (outside = 0), then erosion (outside = 1),
    as ``skimage.morphology.binary_closing``."""
    footprint = _disk(radius)
    dilated = ndi.binary_dilation(mask, structure=footprint, border_value=0)
    return ndi.binary_erosion(dilated, structure=footprint, border_value=1)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 8-connected component; on ties the lowest label (raster order) wins."""
    labels, n = ndi.label(mask, structure=_EIGHT)
    if n <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def heatmap_channel(logits: np.ndarray, heatmap: np.ndarray, mode: str = "predicted",
                    true_label: int | None = None) -> np.ndarray:
    """The ``(H, W)`` channel of ``heatmap (K, H, W)`` for the predicted class (``argmax`` of
    ``logits (K,)``, as published) or, with ``mode="true"``, for ``true_label``."""
    logits = np.asarray(logits).reshape(-1)
    heatmap = np.asarray(heatmap)
    if heatmap.ndim != 3 or heatmap.shape[0] != len(logits):
        raise ValueError(f"heatmap must be (K, H, W) with K = {len(logits)} logits, got shape "
                         f"{heatmap.shape}")
    if mode == "predicted":
        k = int(np.argmax(logits))
    elif mode == "true":
        if true_label is None or not 0 <= int(true_label) < len(logits):
            raise ValueError(f"mode='true' needs true_label in 0..{len(logits) - 1}, got "
                             f"{true_label!r}")
        k = int(true_label)
    else:
        raise ValueError(f"mode must be 'predicted' or 'true', got {mode!r}")
    return heatmap[k]


def _as_float(heatmap) -> np.ndarray:
    if hasattr(heatmap, "detach"):  # a torch tensor
        heatmap = heatmap.detach().cpu().numpy()
    hm = np.asarray(heatmap)
    if hm.dtype == np.float16 or not np.issubdtype(hm.dtype, np.floating):
        hm = hm.astype(np.float32)
    return hm
