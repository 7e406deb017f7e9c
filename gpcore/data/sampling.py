"""Which training slices a run sees (``train.train_slice_step``, ``train.min_brain_fraction``).

Slice-level labels carry a shortcut: Healthy slices of a tumour patient are mostly the top and
bottom of the brain (small cross-sections, other anatomy), tumour slices the middle. On the
phantom's quick store the brain cross-section of a Healthy slice is a median 46 % of its
patient's largest, of a tumour slice 89 % (issue 13, ``docs/recipe.md``). A classifier can
then tell Healthy from tumour by the axial level alone, and its maps light the whole brain.
Keeping only slices whose brain cross-section is at least ``min_brain_fraction`` of the
patient's largest takes most of that cue away. Validation and test slices are never filtered.
"""
from __future__ import annotations

import numpy as np


def brain_areas(images, rows) -> np.ndarray:
    """Pixels with any non-zero contrast, per store row ``(len(rows),)`` (ascending reads)."""
    rows = np.asarray(rows, np.int64)
    out = np.empty(len(rows), np.int64)
    for i in np.argsort(rows):
        out[i] = np.count_nonzero(np.any(np.asarray(images[rows[i]]) != 0, axis=0))
    return out


def level_filter(store, rows, min_brain_fraction: float) -> np.ndarray:
    """``rows`` whose brain area is at least ``min_brain_fraction`` of the largest brain area
    among the same patient's ``rows`` (0: every row)."""
    rows = np.asarray(rows, np.int64)
    if not 0.0 <= float(min_brain_fraction) < 1.0:
        raise ValueError(f"train.min_brain_fraction must be in [0, 1), got {min_brain_fraction}")
    if min_brain_fraction <= 0 or len(rows) == 0:
        return rows
    area = brain_areas(store.images, rows)
    patients = store.index["patient_id"].to_numpy()[rows]
    largest = {p: area[patients == p].max() for p in np.unique(patients)}
    frac = area / np.maximum(1, np.array([largest[p] for p in patients]))
    return rows[frac >= float(min_brain_fraction)]
