"""``gpcore compare RUN_DIR... --out DIR``: the models of a study side by side, on the same
split, fold and protocol - classification, weakly-supervised segmentation, explanation quality
(MProtoNet's AP and IDS) and agreement with Captum occlusion / guided backprop - plus an
all-brain-mask baseline, and figure grids of the same test slices explained by every method.

Each run is evaluated (``gpcore evaluate``) and explained (``gpcore.explanations.run``) first when it
has not been; both are cached in the run folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..explanations.run import ExplainConfig, brain_masks, explain_run, load_run, summarise
from ..inference.maps import MaskRule
from ..inference.predict import read_predictions
from ..rundir import RunDir
from ..io import save_figure, write_table

# (column, metric key in explain.json, how it reads)
EXPLAIN_COLUMNS = (("AP (slice mean)", "ap_slice_mean"), ("AP (patient stack)", "ap_patient_mean"),
                   ("IDS ↓", "ids"), ("pointing game", "pointing_own"),
                   ("Spearman vs occlusion", "spearman_occlusion"),
                   ("Spearman vs guided BP", "spearman_guided_backprop"),
                   ("top-10% IoU vs occlusion", "top10_iou_occlusion"),
                   ("top-10% IoU vs guided BP", "top10_iou_guided_backprop"))


def _fmt(est, low=None, high=None) -> str:
    if est is None or (isinstance(est, float) and not np.isfinite(est)):
        return "–"
    if low is None or high is None or not np.isfinite(low):
        return f"{est:.3f}"
    return f"{est:.3f} [{low:.3f}, {high:.3f}]"


def figure_positions(test: dict, n: int = 4) -> np.ndarray:
    """Test positions of the ``n`` largest-tumour slices, one per patient where possible."""
    area = test["masks"].reshape(len(test["masks"]), -1).astype(bool).sum(1)
    order = np.argsort(-area, kind="stable")
    chosen, seen = [], set()
    for p in order:
        if area[p] == 0:
            break
        if test["patient_ids"][p] not in seen:
            chosen.append(int(p))
            seen.add(test["patient_ids"][p])
        if len(chosen) == n:
            break
    return np.array(sorted(chosen), dtype=np.int64)


def _evaluation_rows(run: RunDir) -> dict:
    cls = run.evaluation_table("classification_summary")
    seg = run.evaluation_table("segmentation_summary")
    seg = seg[seg["setting"] == "validation-chosen"]

    def pick(subset, metric):
        row = seg[(seg["subset"] == subset) & (seg["metric"] == metric)]
        return row.iloc[0] if len(row) else None

    dice, fp = pick("tumour", "median_dice"), pick("healthy", "fp_rate")
    choice = run.offset_choice()
    return {"label": choice["label"], "macro_f1": float(cls["f1_macro"].iloc[0]),
            "balanced_accuracy": float(cls["balanced_accuracy"].iloc[0]),
            "dice": dice, "fp": fp, "mask_rule": MaskRule.from_choice(choice).describe()}


def all_brain_baseline(loaded: dict, n_resamples: int) -> dict:
    """The trivial segmentation: the whole brain as the tumour mask, on the test slices."""
    from .explanation import activation_precision
    from .segmentation import dice_per_slice

    test = loaded["test"]
    tumour = np.flatnonzero(test["masks"].reshape(len(test["masks"]), -1).any(1))
    brain = brain_masks(loaded, tumour)
    dice = dice_per_slice(brain, np.asarray(test["masks"][tumour]) > 0)
    ap = [activation_precision(b.astype(float), test["masks"][p])["ap"]
          for b, p in zip(brain, tumour)]
    pids = test["patient_ids"][tumour]
    return {"dice": summarise(pd.Series(dice), pids, "median", n_resamples, 0),
            "ap": summarise(pd.Series(ap), pids, "mean", n_resamples, 0),
            "positions": tumour, "slice_dice": np.asarray(dice, np.float64), "patients": pids}


def dice_gain_over(run, base: dict, n_resamples: int) -> dict:
    """Paired patient-bootstrap difference of median test Dice (validation-chosen offset):
    the run's per-slice Dice minus the all-brain mask's on the same GT-tumour slices."""
    from .bootstrap import bootstrap_median_difference_ci

    scores = RunDir(run).evaluation_table("segmentation_slices")
    dice = scores.set_index("row")["dice"].reindex(base["positions"]).to_numpy(np.float64)
    est, low, high = bootstrap_median_difference_ci(dice, base["slice_dice"], base["patients"],
                                                    n_resamples, seed=0)
    return {"estimate": est, "low": low, "high": high, "n": int(np.isfinite(dice).sum())}


def compare(run_dirs: list[str | Path], out_dir: str | Path, cfg: ExplainConfig | None = None,
            device: str = "cpu", n_resamples: int = 2000, progress: bool = True,
            figures_dir: str | Path | None = None) -> Path:
    """Write ``comparison`` (wide, formatted), ``comparison_long`` (numbers with CIs) tables
    into ``out_dir`` and the figures ``explanation_grid``, ``captum_grid``,
    ``deletion_curves`` into ``figures_dir`` (default ``out_dir``)."""
    from .run import evaluate

    cfg = cfg or ExplainConfig()
    runs = [RunDir(r) for r in run_dirs]
    if not runs:
        raise ValueError("compare needs at least one evaluated run folder")
    for run in runs:
        if not run.is_evaluated():
            evaluate(run.path, device, n_resamples=n_resamples, progress=progress)
    first = load_run(runs[0], device)
    rows0 = first["test"]["index"]["row"].to_numpy()
    positions = figure_positions(first["test"])
    base = all_brain_baseline(first, n_resamples)
    wide, long, explained = [], [], []
    for run in runs:
        ev = _evaluation_rows(run)
        rows = read_predictions(run.predictions("test"))["index"]["row"].to_numpy()
        if not np.array_equal(rows, rows0):
            raise ValueError(f"{run}: its test slices differ from {runs[0]}'s; compare runs of "
                             f"the same store, split and fold")
        folder = explain_run(run, cfg, device, positions, progress)
        ex = json.loads((folder / "explain.json").read_text())
        explained.append((ex["model"], folder))
        d, fp = ev["dice"], ev["fp"]
        gain = dice_gain_over(run, base, n_resamples)
        row = {"model": ex["model"], "macro-F1": f"{ev['macro_f1']:.3f}",
               "median Dice [95% CI]": _fmt(d["estimate"], d["low"], d["high"]) if d is not None
               else "–",
               "Δ median Dice vs all-brain [95% CI]": _fmt(*(gain[k] for k in
                                                              ("estimate", "low", "high"))),
               "healthy FP rate": _fmt(fp["estimate"]) if fp is not None else "–",
               "mask rule (val)": ev["mask_rule"]}
        long.append({"model": ex["model"], "metric": "macro_f1", "estimate": ev["macro_f1"]})
        if d is not None:
            long.append({"model": ex["model"], "metric": "median_dice", "estimate": d["estimate"],
                         "low": d["low"], "high": d["high"], "n": d["n_slices"]})
        long.append({"model": ex["model"], "metric": "median_dice_minus_all_brain", **gain})
        if fp is not None:
            long.append({"model": ex["model"], "metric": "healthy_fp_rate",
                         "estimate": fp["estimate"], "low": fp["low"], "high": fp["high"]})
        for column, key in EXPLAIN_COLUMNS:
            m = ex["metrics"][key]
            row[column] = _fmt(m["estimate"], m["low"], m["high"])
            long.append({"model": ex["model"], "metric": key, **m})
        row["guided backprop"] = ex["guided_backprop"].split(":")[0]
        wide.append(row)
    wide.append({"model": "all-brain mask (baseline)",
                 "median Dice [95% CI]": _fmt(base["dice"]["estimate"], base["dice"]["low"],
                                              base["dice"]["high"]),
                 "healthy FP rate": "1.000" if "Healthy" in first["store"].classes else "–",
                 "AP (slice mean)": _fmt(base["ap"]["estimate"], base["ap"]["low"],
                                         base["ap"]["high"])})
    long.append({"model": "all_brain_mask", "metric": "median_dice", **base["dice"]})
    long.append({"model": "all_brain_mask", "metric": "ap_slice_mean", **base["ap"]})
    out = Path(out_dir)
    title = _title(runs[0])
    table = pd.DataFrame(wide).fillna("–")
    table.insert(0, "run", title)
    write_table(table, out / "comparison")
    write_table(pd.DataFrame(long).assign(run=title), out / "comparison_long")
    _figures(runs, explained, positions, first, Path(figures_dir or out), title)
    return out


def _title(run: RunDir) -> str:
    label = run.offset_choice()["label"]
    return label.rsplit(", ", 1)[0]  # drop the model name


def _figures(runs, explained, positions, first, out: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    test = first["test"]
    channels = list(first["store"].meta.get("channels") or [])
    contrast = channels.index("t1ce") if "t1ce" in channels else 0
    rows = test["index"]["row"].to_numpy()
    images = [np.asarray(first["store"].images[rows[p], contrast], float) for p in positions]
    masks = [test["masks"][p] > 0 for p in positions]
    classes = list(first["store"].classes)
    # each model's saved maps, decompressed once (an NpzFile decompresses on every access)
    saved = {name: dict(np.load(folder / "maps.npz")) for name, folder in explained}

    # same slices, every model's own map (ground-truth class)
    n = len(positions)
    fig, axes = plt.subplots(max(n, 1), len(runs) + 1, figsize=(2.1 * (len(runs) + 1), 2.1 * n),
                             squeeze=False)
    for i, p in enumerate(positions):
        axes[i, 0].imshow(images[i], cmap="gray")
        axes[i, 0].contour(masks[i], levels=[0.5], colors="lime", linewidths=0.7)
        axes[i, 0].set_ylabel(f"{test['patient_ids'][p]}\n{classes[test['labels'][p]]}",
                              fontsize=6)
        for j, (name, _) in enumerate(explained):
            maps = saved[name]
            k = int(np.flatnonzero(maps["positions"] == p)[0])
            ax = axes[i, j + 1]
            ax.imshow(images[i], cmap="gray")
            ax.imshow(maps["own"][k], cmap="inferno", alpha=0.6)
            ax.contour(masks[i], levels=[0.5], colors="lime", linewidths=0.7)
            if i == 0:
                ax.set_title(name, fontsize=8)
    axes[0, 0].set_title("T1-CE + tumour" if contrast else "image + tumour", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"Own localisation maps (ground-truth class): {title}", fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "explanation_grid")
    plt.close(fig)

    # per model: own map, occlusion, guided backprop on the first two slices
    shown = positions[:2]
    kinds = ("own", "occlusion", "guided_backprop")
    fig, axes = plt.subplots(len(runs), 3 * len(shown), squeeze=False,
                             figsize=(1.9 * 3 * len(shown), 1.9 * len(runs)))
    for r, (name, _) in enumerate(explained):
        maps = saved[name]
        for s, p in enumerate(shown):
            k = int(np.flatnonzero(maps["positions"] == p)[0])
            for c, kind in enumerate(kinds):
                ax = axes[r, 3 * s + c]
                ax.imshow(maps[kind][k], cmap="inferno")
                ax.contour(test["masks"][p] > 0, levels=[0.5], colors="lime", linewidths=0.6)
                ax.set_xticks([]), ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"{kind.replace('_', ' ')}\n{test['patient_ids'][p]}",
                                 fontsize=6)
            axes[r, 0].set_ylabel(name, fontsize=7)
    fig.suptitle(f"Own map vs Captum occlusion and guided backprop: {title}", fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "captum_grid")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for name, folder in explained:
        curve = pd.read_csv(folder / "deletion_curve.csv")
        ids = json.loads((folder / "explain.json").read_text())["metrics"]["ids"]["estimate"]
        ax.plot(curve["deleted_fraction"], curve["balanced_accuracy"],
                label=f"{name} (IDS {ids:.3f})")
    ax.set_xlabel("fraction of pixels deleted (highest attribution first)")
    ax.set_ylabel("balanced accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6)
    ax.set_title(f"Incremental deletion: {title}", fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "deletion_curves")
    plt.close(fig)


def add_cli(sub) -> None:
    p = sub.add_parser("compare", help="models side by side: macro-F1, Dice, AP, IDS, Captum "
                                       "agreement, and figure grids")
    p.add_argument("run_dir", nargs="+", help="training run folders of the same store/split/fold")
    p.add_argument("--out", required=True, help="folder for the tables and figures")
    p.add_argument("--profile", help="read the explain: settings of this profile")
    p.add_argument("--device", default="cpu")
    p.add_argument("--resamples", type=int, default=2000, help="patient bootstrap resamples")
    p.add_argument("--captum-slices", type=int, help="tumour slices explained by Captum")
    p.add_argument("--ids-slices", type=int, help="slices in the deletion curve")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    cfg = ExplainConfig.from_profile(args.profile, captum_max_slices=args.captum_slices,
                                     ids_max_slices=args.ids_slices,
                                     n_resamples=args.resamples)
    out = compare(args.run_dir, args.out, cfg, args.device, args.resamples)
    print((Path(out) / "comparison.md").read_text())
    return 0
