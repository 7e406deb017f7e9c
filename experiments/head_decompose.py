"""Can a different read-out of the same features localise? Validation patients only.

    python -m experiments.head_decompose RUN [RUN ...] --out docs/recipe7_decompose

A GP model's map of class ``k`` is ``cam_k = sum_j w_kj F_j`` over its final features
``F (C, H, W)`` and head weights ``w (K, C)``. Under the published head (global max pooling of
``F`` before the 1x1 conv) that map is not what decides the logit, so a map that is low on the
tumour might still hide features that peak there. Per run, the median per-slice pixel AUROC
inside the head / brain (true class ``k``, validation tumour slices) of:

* ``cam`` - the model's own map (what ``gpcore`` thresholds);
* ``positive`` - ``sum_j max(w_kj, 0) F_j``: the evidence *for* ``k`` alone;
* ``discriminative`` - ``sum_j max(w_kj - mean_c w_cj, 0) F_j``: what favours ``k`` over the
  other classes under softmax;
* ``negative`` - ``-sum_j min(w_kj, 0) F_j``: the evidence against ``k``;
* ``feature_norm`` - ``||F||_2`` over channels: where the network's features are strong at all.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

READOUTS = ("cam", "positive", "discriminative", "negative", "feature_norm")


def readouts(feats, weight) -> dict:
    """``feats (C, H, W)``, ``weight (C,)`` of the class and ``(K, C)`` of all: the maps."""
    import torch

    w_k, w = weight
    disc = (w_k - w.mean(0)).clamp(min=0)
    return {"cam": torch.einsum("c,chw->hw", w_k, feats),
            "positive": torch.einsum("c,chw->hw", w_k.clamp(min=0), feats),
            "discriminative": torch.einsum("c,chw->hw", disc, feats),
            "negative": -torch.einsum("c,chw->hw", w_k.clamp(max=0), feats),
            "feature_norm": feats.norm(dim=0)}


def decompose(run: Path, batch_size: int = 32) -> pd.DataFrame:
    """One row: ``run``'s median AUROC of each read-out (``auroc_<name>``)."""
    import torch

    from gpcore.evaluation.segmentation import pixel_auroc
    from gpcore.inference.predict import load_checkpoint, normalise_batch
    from gpcore.inference.maps import brain_mask

    from .recipe import validation_rows

    store, rows = validation_rows(run)
    rows = np.asarray(rows, np.int64)
    model, meta = load_checkpoint(run / "best.safetensors")
    model.eval()
    norm = (meta.get("extra") or {}).get("normalisation") or "max"
    weight = model.head.weight.detach()[:, :, 0, 0].float()
    labels = store.index.set_index("row").loc[rows, "label"].to_numpy()
    scores = {name: [] for name in READOUTS}
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        with torch.inference_mode():
            feats = model.features(normalise_batch(store.images[chunk], norm)).float()
        for i, row in enumerate(chunk):
            gt = np.asarray(store.masks[row]) > 0
            if not gt.any():
                continue
            k = int(labels[start + i])
            head = brain_mask(store.images[row])
            for name, m in readouts(feats[i], (weight[k], weight)).items():
                scores[name].append(pixel_auroc(m.numpy(), gt, head))
    return pd.DataFrame([{"run": str(run), "slices": len(scores["cam"]),
                          **{f"auroc_{n}": float(np.nanmedian(v)) for n, v in scores.items()}}])


def main(argv=None) -> int:
    import torch

    from .run_tables import main as run_tables

    torch.set_num_threads(1)
    return run_tables("python -m experiments.head_decompose", __doc__, decompose, argv)


if __name__ == "__main__":
    sys.exit(main())
