"""Intensity normalisation, applied when a slice is loaded (after augmentation).

* ``"max"`` (paper, ``normmode=3``): divide the slice by its maximum over all channels and
  pixels - one scalar per slice (the reference README's "per channel" is wrong, defect D12).
* ``"zscore"``: per channel, zero mean and unit variance inside the brain (any channel
  non-zero); background stays 0.
* ``"percentile"``: per channel, map the 1st..99th percentile inside the brain to 0..1 and clip.
* ``"median"``: per channel, divide by the median inside the brain. A lesion (a few % of the
  brain) moves neither the median nor, therefore, the normal tissue's intensity - under
  ``"max"`` a bright lesion darkens every other pixel of its slice, a cue for "tumour" that
  is readable anywhere, even at the brain's edge (issue 13).
"""
from __future__ import annotations

import torch
from torch import Tensor

MODES = ("max", "zscore", "percentile", "median", "none")


def brain_mask(image: Tensor) -> Tensor:
    """``(C, H, W) -> (H, W)`` bool: pixels where any contrast is non-zero."""
    return (image != 0).any(dim=0)


def normalise(image: Tensor, mode: str = "max", fallback: Tensor | None = None,
              percentiles: tuple[float, float] = (1.0, 99.0)) -> Tensor:
    """Normalise one slice ``(C, H, W)`` float32.

    ``fallback``: for ``"max"``, the un-augmented slice, whose maximum is used when the
    augmented slice has none (as published). A slice with no positive value at all raises.
    """
    if mode == "none":
        return image
    if mode == "max":
        peak = image.max()
        if peak <= 0 and fallback is not None:
            return fallback / _positive_max(fallback)
        return image / _positive_max(image, peak)
    brain = brain_mask(image)
    if not brain.any():
        return torch.zeros_like(image)
    out = torch.zeros_like(image)
    for c in range(image.shape[0]):
        values = image[c][brain]
        if mode == "zscore":
            std = values.std(unbiased=False)
            out[c][brain] = (values - values.mean()) / (std if std > 0 else 1.0)
        elif mode == "median":
            med = values.median()
            out[c][brain] = values / (med if med > 0 else values.abs().max().clamp_min(1e-6))
        elif mode == "percentile":
            lo, hi = torch.quantile(values, torch.tensor(percentiles, dtype=values.dtype) / 100)
            out[c][brain] = ((values - lo) / (hi - lo if hi > lo else 1.0)).clamp(0, 1)
        else:
            raise ValueError(f"normalisation must be one of {MODES}, got {mode!r}")
    return out


def _positive_max(image: Tensor, peak: Tensor | None = None) -> Tensor:
    peak = image.max() if peak is None else peak
    if peak <= 0:
        raise ValueError("slice has no positive intensity, so max-normalisation is undefined; "
                         "empty slices should have been dropped by preprocessing")
    return peak
