"""The head of a 2D slice whose background is not exactly zero (JPEG / PNG exports such as the
Figshare slices: noise and compression ringing of a few grey levels around the head).

Every later stage takes "non-zero" for "inside the head": the median normalisation divides by
the median there, the map rules' brain restriction and the whole-head baseline mask use it.
With a noisy background that region is the whole image - on Figshare the median then falls
from ~50 to ~6 grey levels on slices where the head fills less of the frame, a 10x change in
input scale between slices. :func:`zero_background` sets everything outside the head to 0 when
the store is built.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: foreground: above this share of the slice's 99th percentile (the background's grey levels
#: of a few % of the head's); then the largest connected part, closed and with holes filled
HEAD_THRESHOLD = 0.1


def head_mask(image: np.ndarray, threshold: float = HEAD_THRESHOLD) -> np.ndarray:
    """``(C, H, W)`` slice -> ``(H, W)`` bool: the largest connected region brighter than
    ``threshold`` x the 99th percentile (any channel), closed (3 px) and holes filled, so dark
    structures inside the head (ventricles, bone, necrosis) belong to it."""
    img = np.abs(np.asarray(image, np.float32)).max(0)
    high = float(np.percentile(img, 99))
    if high <= 0:
        return np.zeros(img.shape, bool)
    labels, n = ndi.label(img > threshold * high)
    if n == 0:
        return np.zeros(img.shape, bool)
    largest = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    closed = ndi.binary_closing(largest, structure=np.ones((3, 3), bool), iterations=3,
                                border_value=0)
    return ndi.binary_fill_holes(closed | largest)


def zero_background(image: np.ndarray, threshold: float = HEAD_THRESHOLD) -> np.ndarray:
    """``(C, H, W)`` slice with every pixel outside :func:`head_mask` set to 0 (same dtype)."""
    return np.where(head_mask(image, threshold)[None], image, np.zeros((), image.dtype))
