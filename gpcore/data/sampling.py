"""Which training slices a run sees (``train.train_slice_step``, ``train.min_brain_fraction``)
and how often (``train.class_sampling_power``).

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
import torch


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


def class_sampling_weights(labels, power: float) -> np.ndarray:
    """Per-slice draw weights ``(N,)`` for class-aware sampling: slice ``i`` of class ``c``
    gets ``n_c ** -power`` (normalised to sum 1), so class ``c`` fills a share of each epoch
    proportional to ``n_c ** (1 - power)`` - 0: as present, 0.5: square-root, 1: balanced.

    Why: on the phantom LGG is ~6 % of the training slices and plain cross-entropy's arg-max
    under-calls it (GP-ReconResNet: LGG recall 0.00-0.65 per fold at an LGG AUROC of
    0.86-0.93, ``docs/recipe.md`` round 10); drawing it more often shows the rare class's
    lesions more often without the per-slice loss weights that made maps encode the patient.
    """
    labels = np.asarray(labels, np.int64)
    if not 0.0 <= float(power) <= 1.0:
        raise ValueError(f"train.class_sampling_power must be in [0, 1], got {power}")
    counts = np.bincount(labels)
    w = counts[labels].astype(np.float64) ** -float(power)
    return w / w.sum()


class ClassAwareSampler(torch.utils.data.Sampler):
    """Draws ``len(weights)`` slice positions per epoch with replacement, by ``weights``
    (:func:`class_sampling_weights`), the same draw on every rank (seeded by ``seed`` and the
    epoch), each rank taking every ``num_replicas``-th position - a drop-in for
    ``DistributedSampler`` (``set_epoch``, the same epoch length)."""

    def __init__(self, weights: np.ndarray, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0):
        self.weights = torch.as_tensor(np.asarray(weights, np.float64))
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self.num_samples = -(-len(self.weights) // num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        total = self.num_samples * self.num_replicas
        draw = torch.multinomial(self.weights, total, replacement=True, generator=g)
        return iter(draw[self.rank:total:self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples
