"""What the dataset readers return, and what the slice store consumes.

Two kinds of source:

* volumetric, multi-contrast subjects (BraTS 2020 and the BraTS-layout phantom):
  :class:`VolumeSubject`, whose ``load()`` gives a :class:`Volume`;
* 2D slices with masks (Figshare ``.mat`` files, manifest CSVs): :class:`SliceSample`, whose
  ``load()`` gives ``(image (C, H, W) float32, mask (H, W) uint8 or None)``.

Readers only discover and validate paths cheaply; voxel data is read by ``load()``, one subject
at a time, so that preprocessing streams with bounded memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

#: BraTS 2020 file suffixes in the paper's channel order (T1, T2, T1CE, FLAIR)
BRATS_CONTRASTS: tuple[str, ...] = ("t1", "t2", "t1ce", "flair")
#: the label values a BraTS 2020 segmentation may contain
BRATS_LABELS: frozenset[int] = frozenset({0, 1, 2, 4})
#: slice classes of the BraTS study: index = class label
BRATS_CLASSES: tuple[str, ...] = ("Healthy", "LGG", "HGG")


@dataclass
class Volume:
    """One subject's voxels. ``image``: ``(C, X, Y, Z)`` float32 in channel order;
    ``seg``: ``(X, Y, Z)`` uint8 labels or ``None`` (BraTS validation data); ``affine``: (4, 4)."""

    image: np.ndarray
    seg: np.ndarray | None
    affine: np.ndarray
    source_dtype: np.dtype = field(default_factory=lambda: np.dtype("float32"))


@dataclass(frozen=True)
class VolumeSubject:
    """A BraTS-like subject folder. Axial slices are ``volume[..., k]``."""

    subject_id: str
    folder: Path
    contrasts: tuple[str, ...]
    image_paths: tuple[Path, ...]  # one per contrast, in channel order
    seg_path: Path | None
    grade: str | None  # "HGG" / "LGG", None when unknown (validation data)
    loader: Callable[["VolumeSubject"], Volume] = field(repr=False, compare=False, default=None)

    def load(self) -> Volume:
        """Read and check the voxels (raises :class:`~gpcore.data.errors.DataError`)."""
        return self.loader(self)


@dataclass(frozen=True)
class SliceSample:
    """One 2D slice with its mask, from a slice dataset (Figshare, manifest CSV)."""

    patient_id: str
    sample_id: str
    label: int  # the dataset's own class code (Figshare: 1 meningioma, 2 glioma, 3 pituitary)
    label_name: str
    fold: int | None  # the dataset's own patient-wise fold, if it provides one
    image_path: Path
    mask_path: Path | None
    loader: Callable[["SliceSample"], tuple[np.ndarray, np.ndarray | None]] = field(
        repr=False, compare=False, default=None)

    def load(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(image (C, H, W) float32, mask (H, W) uint8 or None)``; raises ``DataError``."""
        return self.loader(self)
