"""Tables and figures that describe a slice store."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from .normalise import normalise
from .store import SliceStore

#: BraTS sub-region label -> (legend name, overlay colour)
LABEL_COLOURS = {1: ("NCR/NET (1)", (0.85, 0.15, 0.15)), 2: ("ED (2)", (0.2, 0.8, 0.2)),
                 4: ("ET (4)", (1.0, 0.85, 0.0))}


def class_counts(store: SliceStore) -> pd.DataFrame:
    """Slices and patients per class (label -1: unlabelled)."""
    idx = store.index
    rows = []
    for label, group in idx.groupby("label"):
        name = store.classes[label] if label >= 0 else "unlabelled"
        rows.append({"label": int(label), "class": name, "slices": len(group),
                     "patients": group.patient_id.nunique()})
    rows.append({"label": "", "class": "total", "slices": len(idx),
                 "patients": idx.patient_id.nunique()})
    return pd.DataFrame(rows)


def overlay(ax, image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> None:
    """Show a greyscale ``image (H, W)`` with the sub-region labels of ``mask (H, W)``."""
    ax.imshow(image, cmap="gray", interpolation="nearest")
    rgba = np.zeros((*mask.shape, 4))
    for label, (_, colour) in LABEL_COLOURS.items():
        rgba[mask == label] = (*colour, alpha)
    if mask.max() == 1:  # binary masks of 2D datasets
        rgba[mask == 1] = (*LABEL_COLOURS[1][1], alpha)
    ax.imshow(rgba, interpolation="nearest")
    ax.set_axis_off()


def plot_store_examples(store: SliceStore, out_stem: str | os.PathLike, title: str,
                        per_class: int = 3, channel: int | None = None, seed: int = 0):
    """A grid of random example slices per class (one row per class), mask overlaid.

    ``channel``: the contrast shown (default: T1CE if the store has it, else channel 0).
    """
    import matplotlib.pyplot as plt

    from ..io import save_figure

    channels = store.meta.get("channels") or []
    if channel is None:
        channel = channels.index("t1ce") if "t1ce" in channels else 0
    idx = store.index
    labels = sorted(label for label in idx.label.unique() if label >= 0)
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(labels), per_class, figsize=(2.2 * per_class, 2.3 * len(labels)),
                             squeeze=False)
    for r, label in enumerate(labels):
        rows = idx.row[idx.label == label].to_numpy()
        chosen = rng.choice(rows, size=min(per_class, len(rows)), replace=False)
        for c in range(per_class):
            ax = axes[r, c]
            ax.set_axis_off()
            if c >= len(chosen):
                continue
            import torch

            img = normalise(torch.from_numpy(np.asarray(store.images[chosen[c]], np.float32)))
            overlay(ax, img[channel].numpy(), np.asarray(store.masks[chosen[c]]))
            pid = idx.patient_id[chosen[c]]
            ax.set_title(f"{store.classes[label]}\n{pid} #{idx.slice_index[chosen[c]]}",
                         fontsize=7)
    name = channels[channel].upper() if channels else f"channel {channel}"
    fig.suptitle(f"{title}\n{name}, mask overlaid", fontsize=9)
    fig.tight_layout()
    paths = save_figure(fig, out_stem)
    plt.close(fig)
    return paths
