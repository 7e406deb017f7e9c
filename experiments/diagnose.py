"""Why a run's maps do (not) segment, on its **validation** patients (issue 13's causes):

    python -m experiments.diagnose RUN [RUN ...] --out docs/figures/recipe_maps.png

* a figure: per run, three validation tumour slices (the largest tumour of an LGG and of an
  HGG patient, and a median-sized one) with T1-CE, FLAIR, every class map and the
  tumour-vs-healthy evidence map, ground truth outlined;
* a table: validation median Dice of the run's validation-chosen mask rule by ground-truth
  tumour area (quartiles), with the median mask area and the share of empty masks - small
  tumours and predicted-Healthy slices are where the median is lost.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.recipe import validation


def size_table(run: Path, val: dict) -> pd.DataFrame:
    """Validation Dice of the chosen mask rule by tumour-area quartile."""
    from gpcore.evaluation.segmentation import score_slices, select_map_rule

    healthy = val["healthy"]
    keys = ("heatmaps", "probabilities", "masks", "labels")
    choice, _ = select_map_rule(*(val[k] for k in keys), brain=val["brain"],
                                healthy_class=healthy, workers=1)
    s = score_slices(*(val[k] for k in keys), choice["offset"], choice["cleanup"],
                     healthy_class=healthy, rule=choice["rule"], in_brain=choice["in_brain"],
                     brain=val["brain"], workers=1)
    s = s[s["gt_area"] > 0].copy()
    s["tumour area (px)"] = pd.qcut(s["gt_area"], 4).astype(str)
    out = s.groupby("tumour area (px)", sort=False).agg(
        slices=("dice", "size"), median_dice=("dice", "median"),
        median_mask_area=("mask_area", "median"), median_gt_area=("gt_area", "median"),
        empty_masks=("mask_area", lambda v: float((v == 0).mean()))).reset_index()
    out.insert(0, "mask rule", f"{choice['rule']}{', brain' if choice['in_brain'] else ''}, "
                               f"{choice['offset']:g}")
    out.insert(0, "run", "/".join(run.parts[-3:]))
    return out


def _picks(val: dict) -> list[int]:
    area = (np.asarray(val["masks"]) > 0).reshape(len(val["masks"]), -1).sum(1)
    labels = np.asarray(val["labels"])
    picks = []
    for lab in np.unique(labels[area > 0]):
        cand = np.flatnonzero((labels == lab) & (area > 0))
        picks.append(int(cand[np.argmax(area[cand])]))
    tumour = np.flatnonzero(area > 0)
    picks.append(int(tumour[np.argsort(area[tumour])[len(tumour) // 2]]))
    return picks[:3]


def figure(runs: list[Path], vals: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gpcore.io import save_figure

    rows = [(run, val, r) for run, val in zip(runs, vals) for r in _picks(val)]
    classes = list(vals[0]["store"].classes)
    ncol = 2 + len(classes) + 1
    fig, axes = plt.subplots(len(rows), ncol, figsize=(1.6 * ncol, 1.7 * len(rows)),
                             squeeze=False)
    for ax_row, (run, val, r) in zip(axes, rows):
        store = val["store"]
        channels = list(store.meta.get("channels") or [])
        img = np.asarray(store.images[val["index"]["row"].iat[r]], np.float32)
        gt = np.asarray(val["masks"][r]) > 0
        hms = np.asarray(val["heatmaps"][r], np.float32)
        shown = [(img[channels.index(c)] if c in channels else img[0], c.upper(), "gray")
                 for c in ("t1ce", "flair")]
        shown += [(hms[k], f"{name} map", "inferno") for k, name in enumerate(classes)]
        if "Healthy" in classes:
            h = classes.index("Healthy")
            ev = np.delete(hms, h, 0).max(0) - hms[h]
            shown.append((ev, "evidence", "inferno"))
        else:
            shown.append((hms.sum(0), "sum", "inferno"))
        for ax, (image, title, cmap) in zip(ax_row, shown):
            ax.imshow(image, cmap=cmap, interpolation="nearest")
            ax.contour(gt, levels=[0.5], colors="cyan", linewidths=0.6)
            ax.set_title(title, fontsize=6)
            ax.set_axis_off()
        prob = val["probabilities"][r]
        ax_row[0].set_title(f"{'/'.join(run.parts[-3:-1])} {run.name}\ntrue "
                            f"{classes[int(val['labels'][r])]}, pred "
                            f"{classes[int(np.argmax(prob))]} {prob.max():.2f}", fontsize=5)
    fig.suptitle("Validation slices: class maps and tumour evidence (ground truth in cyan)",
                 fontsize=8)
    fig.tight_layout()
    save_figure(fig, out.with_suffix(""))
    plt.close(fig)


def level_table(store_dir: str | Path) -> pd.DataFrame:
    """The axial-level shortcut of slice labels: each slice's brain cross-section as a share of
    its patient's largest, summarised per class (``gpcore.data.sampling``)."""
    from gpcore.data.sampling import brain_areas
    from gpcore.data.store import SliceStore

    store = SliceStore(store_dir)
    index = store.index.copy()
    index["brain_area"] = brain_areas(store.images, index["row"].to_numpy())
    index["brain_fraction"] = index["brain_area"] / index.groupby("patient_id")[
        "brain_area"].transform("max")
    out = index.groupby("class_name", sort=False)["brain_fraction"].describe(
        percentiles=[0.25, 0.5, 0.75])
    out.insert(0, "share >= 0.6", index.groupby("class_name", sort=False)["brain_fraction"]
               .apply(lambda v: float((v >= 0.6).mean())))
    return out.reset_index()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.diagnose", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*")
    parser.add_argument("--levels", metavar="STORE", help="print (and with --table write) the "
                        "brain cross-section share per class of this slice store, then stop")
    parser.add_argument("--out", default="docs/figures/recipe_maps.png")
    parser.add_argument("--table", help="also write the size table here (CSV + Markdown stem)")
    args = parser.parse_args(argv)
    if args.levels:
        table = level_table(args.levels)
        print(table.to_string(index=False))
        if args.table:
            from gpcore.io import write_table

            write_table(table, args.table)
        return 0
    if not args.runs:
        parser.error("give run folders, or --levels STORE")
    runs = [Path(r) for r in args.runs]
    vals = [validation(r) for r in runs]
    table = pd.concat([size_table(r, v) for r, v in zip(runs, vals)], ignore_index=True)
    print(table.to_string(index=False))
    if args.table:
        from gpcore.io import write_table

        write_table(table, args.table)
    figure(runs, vals, Path(args.out))
    print(f"figure: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
