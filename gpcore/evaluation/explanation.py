"""Explanation-quality metrics exactly as MProtoNet defines them (``docs/spec/mprotonet.md``
§7, ported to 2D per §8): activation precision (AP) and the incremental deletion score (IDS).

* **AP**: the attribution is min-max normalised over the whole tensor, binarised at 0.5 per
  channel, and AP = |activation ∩ whole tumour| / max(|activation|, 1) (an empty activation
  gives 0); DSC@0.5 comes from the same masks. The channel values are averaged.
* **IDS**: per slice, the channel-mean attribution is thresholded at its quantiles
  ``linspace(1, 0, 51)``; step i deletes (sets to the fill value 0 in model-input space) every
  pixel with attribution >= the i-th threshold (ties go together). The balanced accuracy of the
  model over all slices at each step gives a 51-point curve, which is clipped to its end points,
  rescaled to [0, 1] and integrated (trapezoid, unit spacing). Lower is better.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score

STEPS = 50


def activation_precision(attribution, segmentation, threshold: float = 0.5) -> dict:
    """AP and DSC@0.5 of one attribution ``(C, H, W)`` or ``(H, W)`` (or a stacked patient
    volume ``(C, S, H, W)``) against the whole-tumour mask ``segmentation > 0``."""
    a = np.asarray(attribution, dtype=np.float64)
    anno = np.asarray(segmentation) > 0
    if a.ndim == anno.ndim:
        a = a[None]
    a = a - a.min()
    a = a / max(a.max(), 1e-12)
    active = a >= threshold  # (C, ...)
    axes = tuple(range(1, active.ndim))
    hits = (active & anno).sum(axis=axes)
    n_active = active.sum(axis=axes)
    ap = hits / np.maximum(n_active, 1)
    dsc = 2 * hits / np.maximum(anno.sum() + n_active, 1)
    return {"ap": float(ap.mean()), "dsc": float(dsc.mean())}


def deletion_masks(attribution: torch.Tensor, steps: int = STEPS) -> torch.Tensor:
    """``(B, H, W)`` channel-mean attributions -> keep-masks ``(steps + 1, B, H, W)``: step 0
    keeps everything, step i removes pixels >= the ``1 - i/steps`` quantile of each slice."""
    flat = attribution.flatten(1).double()
    q = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    thresholds = torch.quantile(flat, q, dim=1)  # (steps + 1, B), linear interpolation
    keep = attribution.double()[None] < thresholds[:, :, None, None]
    keep[0] = True
    return keep


@torch.no_grad()
def deletion_predictions(model, images: torch.Tensor, attributions: torch.Tensor,
                         steps: int = STEPS, fill: float = 0.0, batch_size: int = 64) -> np.ndarray:
    """``(steps + 1, N)`` predicted classes of ``model`` (logits-only callable) after each
    deletion step. ``images (N, C, H, W)`` model inputs; ``attributions (N, H, W)`` or
    ``(N, C, H, W)`` (averaged over channels)."""
    attr = attributions.float()
    if attr.dim() == 4:
        attr = attr.mean(1)
    preds = np.empty((steps + 1, len(images)), dtype=np.int64)
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].float()
        keep = deletion_masks(attr[start:start + batch_size].cpu(), steps).to(x.device)
        for i in range(steps + 1):
            m = keep[i][:, None].to(x.dtype)
            logits = model(x * m + fill * (1 - m))
            preds[i, start:start + len(x)] = logits.argmax(1).cpu().numpy()
    return preds


def curve_from_predictions(preds: np.ndarray, labels) -> np.ndarray:
    """``(steps + 1, 2)``: accuracy and balanced accuracy of each row of ``preds`` over all
    slices (MProtoNet scores the whole fold at each step, not each slice)."""
    labels = np.asarray(labels)
    return np.array([[accuracy_score(labels, p), balanced_accuracy_score(labels, p)]
                     for p in preds])


def deletion_curve(model, images: torch.Tensor, attributions: torch.Tensor, labels,
                   steps: int = STEPS, fill: float = 0.0, batch_size: int = 64) -> np.ndarray:
    """``(steps + 1, 2)``: accuracy and balanced accuracy of ``model`` over all slices after
    each deletion step (see :func:`deletion_predictions`)."""
    return curve_from_predictions(
        deletion_predictions(model, images, attributions, steps, fill, batch_size), labels)


def incremental_deletion_score(curve) -> float:
    """Clip a deletion curve to its end points, rescale to [0, 1], trapezoid area per step."""
    c = np.asarray(curve, dtype=np.float64)
    c = np.clip(c, min(c[0], c[-1]), max(c[0], c[-1]))
    c = c - c.min()
    c = c / max(c.max(), 1e-12)
    return float(np.mean((c[:-1] + c[1:]) / 2))
