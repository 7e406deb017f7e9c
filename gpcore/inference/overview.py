"""The overview figure ``gpcore segment`` writes per subject: the slices with the largest
masks, each as image, heatmap and mask contour."""
from __future__ import annotations

from pathlib import Path

import numpy as np

def overview_slices(mask: np.ndarray, preds: dict[int, str], n: int = 4) -> list[int]:
    """Axial indices of the ``n`` largest masks of ``mask (X, Y, Z)``, sorted; without any mask,
    the ``n`` middle slices among those predicted (``preds``: slice -> class)."""
    areas = mask.reshape(-1, mask.shape[-1]).sum(0).astype(np.int64)  # signed: negated below
    chosen = [int(k) for k in np.argsort(-areas, kind="stable")[:n] if areas[k] > 0]
    if not chosen:
        candidates = sorted(preds)
        mid = len(candidates) // 2
        chosen = candidates[max(0, mid - n // 2): max(0, mid - n // 2) + n]
    return sorted(chosen)


def overview(path: Path, image: np.ndarray, heat: np.ndarray, mask: np.ndarray,
              preds: dict[int, str], display_channel: int, subject_id: str, n: int = 4) -> None:
    """Rows: the ``n`` slices with the largest masks (else the middle non-empty slices)."""
    from matplotlib.figure import Figure

    chosen = overview_slices(mask, preds, n)
    fig = Figure(figsize=(9, 3 * max(1, len(chosen))))
    axes = fig.subplots(max(1, len(chosen)), 3, squeeze=False)
    for row, k in zip(axes, chosen):
        img = image[display_channel, :, :, k].T
        row[0].imshow(img, cmap="gray", origin="lower")
        row[0].set_title(f"slice {k}: {preds.get(k, 'empty')}", fontsize=9)
        im = row[1].imshow(heat[:, :, k].T, cmap="inferno", origin="lower")
        fig.colorbar(im, ax=row[1], fraction=0.046)
        row[1].set_title("heatmap (predicted class)", fontsize=9)
        row[2].imshow(img, cmap="gray", origin="lower")
        if mask[:, :, k].any():
            m = mask[:, :, k].T.astype(bool)
            row[2].imshow(np.ma.masked_where(~m, m.astype(float)), cmap="autumn", alpha=0.3,
                          origin="lower", vmin=0, vmax=1)
            row[2].contour(mask[:, :, k].T.astype(float), levels=[0.5], colors="red",
                           linewidths=1)
        row[2].set_title(f"mask: {int(mask[:, :, k].sum())} voxels", fontsize=9)
        for ax in row:
            ax.set_axis_off()
    fig.suptitle(f"{subject_id}", fontsize=10)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
