"""Heatmap -> the one map that is thresholded: the *map rule* (``evaluation.md``, "Weakly-
supervised segmentation"; issue 13).

A GP model gives one heatmap per class, ``(K, H, W)``. Which map becomes the tumour mask is a
choice made on validation patients, like the offset:

* ``"predicted"`` (as published, the reference's ``MaskMergeMode="predselect"``): the map of
  the predicted class.
* ``"sum"`` (the reference's ``MaskMergeMode="sum"``): the sum of the tumour classes' maps
  (every class but Healthy). A class scored by the *absence* of a feature (LGG: no
  enhancement) can be dark on its own lesion; the sum keeps the evidence the other tumour
  class puts there.
* ``"evidence"``: tumour against healthy, ``max_{k != Healthy} map_k - map_Healthy``: what
  decides "tumour or not" at each pixel. Without a Healthy class (Figshare's tumour types)
  it is the predicted class's map minus the mean of all maps - the part of it that softmax
  does not ignore.

Under every rule a slice predicted Healthy gets the empty mask. With ``brain=True`` the map
is restricted to the brain (the non-zero input, holes filled) *before* thresholding: the
multi-Otsu threshold is computed over brain pixels only and nothing outside them is marked,
so peaks on the zero background or image borders cannot enter the mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

#: the map rules, in the order the validation grid tries them (ties: the earlier one)
MAP_RULES = ("predicted", "sum", "evidence")


def check_rule(rule: str) -> str:
    if rule not in MAP_RULES:
        raise ValueError(f"map rule must be one of {MAP_RULES}, got {rule!r}")
    return rule


def tumour_map(heatmap: np.ndarray, k: int, rule: str = "predicted",
               healthy_class: int | None = 0) -> np.ndarray | None:
    """The ``(H, W)`` map of ``heatmap (K, H, W)`` that ``rule`` thresholds for a slice
    assigned to class ``k`` (predicted, or the true class under ``channel="true"``); ``None``
    (the empty mask) when ``k`` is the Healthy class."""
    check_rule(rule)
    hm = np.asarray(heatmap, np.float32)
    if hm.ndim != 3:
        raise ValueError(f"heatmap must be (K, H, W), got shape {hm.shape}")
    if healthy_class is not None and k == healthy_class:
        return None
    if rule == "predicted":
        return hm[k]
    tumour = [c for c in range(hm.shape[0]) if c != healthy_class]
    if rule == "sum":
        return hm[tumour].sum(0)
    if healthy_class is None:  # no Healthy class: the softmax-relevant part of the map
        return hm[k] - hm.mean(0)
    return hm[tumour].max(0) - hm[healthy_class]


def brain_mask(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` (or ``(H, W)``) slice -> ``(H, W)`` bool: any contrast non-zero, holes
    filled (the brain of a skull-stripped BraTS slice, the head of a Figshare slice)."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = np.abs(img).max(0)
    return ndi.binary_fill_holes(np.abs(img) > 0)


def brain_masks(images, rows) -> np.ndarray:
    """:func:`brain_mask` of ``images[rows]`` (e.g. a memory-mapped store): ``(N, H, W)``."""
    rows = np.asarray(rows, np.int64).reshape(-1)
    order = np.argsort(rows)
    out = np.empty((len(rows),) + tuple(images.shape[-2:]), bool)
    for i in order:  # ascending reads of the memmap
        out[i] = brain_mask(images[rows[i]])
    return out


def peak_outside_brain(heatmaps, probabilities, brain: np.ndarray, select: np.ndarray,
                       healthy_class: int | None = 0) -> float:
    """Share of the ``select``-ed slices whose tumour map (the predicted class's, or the most
    probable tumour class's when Healthy is predicted) peaks outside the brain."""
    probabilities = np.asarray(probabilities)
    rows = np.flatnonzero(np.asarray(select))
    if len(rows) == 0:
        return float("nan")
    outside = 0
    for r in rows:
        p = probabilities[r].copy()
        if healthy_class is not None:
            p[healthy_class] = -np.inf
        hm = np.asarray(heatmaps[r, int(np.argmax(p))], np.float32)
        outside += not brain[r].flat[int(np.argmax(hm))]
    return outside / len(rows)


@dataclass(frozen=True)
class MaskRule:
    """Everything that turns a slice's heatmaps into its mask, as chosen on validation and
    recorded in ``offset_choice.json``: map rule, brain restriction, offset, clean-up."""

    rule: str = "predicted"
    in_brain: bool = False
    offset: float = 0.3
    cleanup: bool = True
    #: ``"multiotsu"`` (published; ``offset`` below the upper threshold) or ``"relative"``
    #: (``offset`` = the fraction f of :mod:`gpcore.inference.threshold`)
    threshold: str = "multiotsu"

    def __post_init__(self):
        from .threshold import check_threshold

        check_rule(self.rule)
        check_threshold(self.threshold)

    @classmethod
    def from_choice(cls, choice: dict) -> "MaskRule":
        """From an ``offset_choice.json`` mapping (files written before map rules existed
        hold only ``offset`` and ``cleanup``: the published map and threshold)."""
        return cls(str(choice.get("rule", "predicted")), bool(choice.get("in_brain", False)),
                   float(choice["offset"]), bool(choice.get("cleanup", True)),
                   str(choice.get("threshold", "multiotsu")))

    def describe(self) -> str:
        """E.g. ``"evidence, brain, 0.3 +clean"`` or ``"evidence, brain, relative 0.5"``."""
        thr = "relative " if self.threshold == "relative" else ""
        return (f"{self.rule}{', brain' if self.in_brain else ''}, {thr}{self.offset:g}"
                f"{' +clean' if self.cleanup else ''}")

    def map(self, heatmap: np.ndarray, k: int, healthy_class: int | None = 0):
        """:func:`tumour_map` of ``heatmap (K, H, W)`` for class ``k`` (``None``: Healthy)."""
        return tumour_map(heatmap, k, self.rule, healthy_class)

    def mask(self, heatmap: np.ndarray, k: int, healthy_class: int | None = 0,
             scale: float | None = None, image: np.ndarray | None = None,
             brain: np.ndarray | None = None) -> np.ndarray:
        """The ``(H, W)`` bool mask of one slice assigned to class ``k``. ``scale`` defaults
        to ``H / 240``; the brain comes from ``brain`` or, failing that, from ``image
        (C, H, W)`` (:func:`brain_mask`) when the rule restricts to it."""
        from .threshold import mask_from_rule, threshold_rule

        hm = self.map(heatmap, k, healthy_class)
        shape = np.shape(heatmap)[-2:]
        if hm is None:
            return np.zeros(shape, bool)
        region = None
        if self.in_brain:
            if brain is None and image is None:
                raise ValueError("this mask rule restricts to the brain: pass the slice's "
                                 "image (or its brain mask)")
            region = np.asarray(brain, bool) if brain is not None else brain_mask(image)
        scale = shape[0] / 240 if scale is None else scale
        return mask_from_rule(hm, threshold_rule(hm, region, self.threshold), self.offset,
                              self.cleanup, scale, region)
