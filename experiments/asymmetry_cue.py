"""Is left-right asymmetry a tumour cue on Figshare slices? Training-free, validation patients.

    python -m experiments.asymmetry_cue data/figshare/quick --out docs/recipe17_asymmetry

Figshare has no Healthy class, so nothing in its image labels says *where* a tumour is
(docs/recipe.md, rounds 7 and 12). A brain is roughly mirror-symmetric and most tumours are
not, so ``|image - mirrored image|`` could be the missing "where" cue - as an input channel
or a prior - without any mask. Before anything is trained on it, this measures how well the
cue itself ranks tumour pixels, beside T1-CE intensity (what round 7 found the GP maps to
follow), on the validation tumour slices of every fold (each slice once), inside the head
(non-zero input), with ``experiments.map_ceiling.slice_scores`` (pixel AUROC, multi-Otsu
Dice, percentile-oracle Dice). Cues, each smoothed (Gaussian, sigma 1.5 px):

* ``intensity`` - the image itself;
* ``asym_box`` - ``|x - mirror(x)|``, mirrored about the centre column of the head's bounding
  box (the head is not aligned: the axis is only where the head's extent puts it);
* ``asym_fit`` - the same about the column (bounding-box centre +- 10 px) whose mirror best
  matches the slice (least squared difference inside the head);
* ``brighter_fit`` - ``max(x - mirror(x), 0)`` about that column: the bright side only
  (enhancing tumour on T1-CE).

Nothing is chosen here and no test patient is read; Figshare mixes axial, coronal and sagittal
slices, and a sagittal slice has no left-right mirror, so the cue can work on part of the data
only - the table is per tumour type.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

#: columns searched around the bounding-box centre for the best mirror axis
AXIS_SEARCH = 10
SIGMA = 1.5
#: slices left out: a tumour of fewer pixels, or a head of fewer, cannot be ranked
MIN_TUMOUR_PX, MIN_HEAD_PX = 4, 100


def mirror(x: np.ndarray, axis2: int) -> np.ndarray:
    """``(H, W)`` -> the image mirrored about column ``axis2 / 2`` (``axis2`` = twice the
    axis, so half-pixel axes are exact); columns mirrored off the image are 0."""
    w = x.shape[1]
    src = axis2 - np.arange(w)
    out = np.zeros_like(x)
    ok = (src >= 0) & (src < w)
    out[:, ok] = x[:, src[ok]]
    return out


def mirror_axes(x: np.ndarray, head: np.ndarray) -> tuple[int, int]:
    """(box, fit): twice the mirror column of the head's bounding-box centre, and of the best
    matching column within +- ``AXIS_SEARCH`` px of it."""
    cols = np.flatnonzero(head.any(0))
    box = int(cols[0] + cols[-1])
    errors = {a: float(((x - mirror(x, a))[head] ** 2).mean())
              for a in range(box - 2 * AXIS_SEARCH, box + 2 * AXIS_SEARCH + 1)}
    return box, min(errors, key=errors.get)


def cues(x: np.ndarray, head: np.ndarray) -> dict[str, np.ndarray]:
    from scipy.ndimage import gaussian_filter

    box, fit = mirror_axes(x, head)
    smooth = lambda m: gaussian_filter(m, SIGMA)  # noqa: E731
    diff_fit = x - mirror(x, fit)
    return {"intensity": smooth(x), "asym_box": smooth(np.abs(x - mirror(x, box))),
            "asym_fit": smooth(np.abs(diff_fit)),
            "brighter_fit": smooth(np.maximum(diff_fit, 0))}


def validation_rows(work_dir: Path):
    """The store and the rows of the validation patients of every fold (each row once)."""
    from gpcore.data.splits import load_split
    from gpcore.data.store import SliceStore

    store = SliceStore(next(Path(work_dir).glob("store_*")))
    split = load_split(Path(work_dir) / "split.csv")
    val = split.loc[split["part"] == "val", "patient_id"].astype(str).unique()
    return store, np.flatnonzero(store.index["patient_id"].astype(str).isin(val).to_numpy())


def measure(work_dir: Path) -> pd.DataFrame:
    from experiments.map_ceiling import slice_scores
    from gpcore.evaluation.segmentation import dice_iou

    store, rows = validation_rows(work_dir)
    index = store.index
    out = []
    for r in rows:
        gt = np.asarray(store.masks[r]) > 0
        x = np.asarray(store.images[r][0], np.float32)
        head = x != 0
        if gt.sum() < MIN_TUMOUR_PX or head.sum() < MIN_HEAD_PX:  # nothing to rank
            continue
        row = {"row": int(r), "label": index["class_name"].iat[r],
               "dice_head": dice_iou(head, gt)[0]}
        for name, score in cues(x, head).items():
            for k, v in slice_scores(score, gt, head).items():
                row[f"{k}_{name}"] = v
        out.append(row)
    return pd.DataFrame(out)


def summary(slices: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in slices.columns if c not in ("row", "label")]
    by = slices.groupby("label")[cols].median()
    by.loc["all"] = slices[cols].median()
    by.insert(0, "slices", slices.groupby("label").size().reindex(by.index).fillna(len(slices)))
    return by.round(3)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.asymmetry_cue",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work_dir", help="a study's data folder (store_<size>, split.csv)")
    parser.add_argument("--out", default=None, help="table stem (CSV + Markdown)")
    args = parser.parse_args(argv)
    table = summary(measure(Path(args.work_dir)))
    print(table.to_string())
    if args.out:
        table.to_csv(f"{args.out}.csv")
        Path(f"{args.out}.md").write_text(table.to_markdown() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
