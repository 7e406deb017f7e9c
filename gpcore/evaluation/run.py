"""``gpcore evaluate RUN_DIR``: classification and weakly-supervised segmentation of a trained
run on its validation and test patients (``docs/spec/evaluation.md``).

1. Predictions of ``best.safetensors`` on the fold's validation and test slices
   (``RUN_DIR/predictions/{val,test}``; reused when present).
2. Classification on test: ``gpcore.evaluation.classification.write_classification_report``.
3. Segmentation: the map rule (predicted class / sum of tumour maps / tumour-vs-healthy
   evidence, whole slice or brain only; :mod:`gpcore.inference.maps`), the offset and the
   clean-up are chosen on the **validation** patients (maximum median Dice), frozen, recorded
   in ``offset_choice.json`` and applied to the test patients; the published setting
   (predicted class, whole slice, published offset) is reported beside it, labelled
   "published". Median Dice / IoU with patient-bootstrap CIs, healthy
   false-positive rate, per-patient 3D Dice.

Tables go to ``RUN_DIR/evaluation/`` (CSV + Markdown), figures to
``RUN_DIR/evaluation/figures/`` (PNG + PDF).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.splits import load_split, split_rows
from ..data.store import SliceStore
from ..io import atomic_path, save_figure, write_table
from ..rundir import RunDir, healthy_index

DATASETS = {"brats": "BraTS 2020", "manifest": "2D dataset (manifest)",
            "figshare-mat": "Figshare (Cheng et al.)"}


def _dataset_label(record: dict, store: SliceStore) -> str:
    source = store.meta["params"]["source"]
    root = str(source.get("root", ""))
    if "phantom" in root:
        return "synthetic phantom"
    return DATASETS.get(source.get("kind"), source.get("kind", "dataset"))


def _dice_figure(scores: pd.DataFrame, classes: list[str], title: str, stem: Path):
    import matplotlib.pyplot as plt

    tumour = scores[scores["gt_area"] > 0]
    groups = [(c, tumour.loc[tumour["label"] == i, "dice"].dropna()) for i, c in
              enumerate(classes)]
    groups = [(c, v) for c, v in groups if len(v)]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    if groups:
        ax.violinplot([v for _, v in groups], showmedians=True)
        ax.set_xticks(range(1, len(groups) + 1), [f"{c}\n(n={len(v)})" for c, v in groups])
    ax.set_ylim(0, 1)
    ax.set_ylabel("slice Dice (test, tumour slices)")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    save_figure(fig, stem)
    plt.close(fig)


def evaluate(run_dir: str | Path, device: str = "cpu", batch_size: int = 64,
             n_resamples: int = 10000, workers: int | None = None, progress: bool = True,
             channel: str = "predicted") -> Path:
    """Evaluate a training run folder; returns ``RUN_DIR/evaluation``.

    ``channel``: the heatmap thresholded into the mask - of the predicted class (as published)
    or of the true class (an upper bound that separates localisation from classification).
    """
    from .classification import write_classification_report
    from .segmentation import (evaluate_with_validation_offset, patient_dice_3d,
                                          score_slices, segmentation_summary)
    from .fidelity import confidence_fidelity, plot_confidence_dice, plot_example_grid
    from ..inference.maps import MAP_RULES, MaskRule, brain_masks
    from ..inference.threshold import PUBLISHED_OFFSETS, THRESHOLDS

    from ..inference.predict import run_predictions

    run = RunDir(run_dir)
    if not run.has_checkpoint:
        raise FileNotFoundError(f"{run}: not a finished training run (needs config.yaml and "
                                f"best.safetensors); train it with `gpcore train` first")
    record = run.record
    store = SliceStore(run.store_path)
    split = load_split(run.split_file)
    fold = run.fold
    classes = list(store.classes)
    model_name, profile = run.model_name, run.profile
    label = (f"{_dataset_label(record, store)}, {record['split']['protocol']} split, "
             f"profile {profile}, fold {fold}, {model_name}"
             + (", true-class heatmap" if channel == "true" else ""))
    data = {part: run_predictions(run, store, split_rows(split, store.index, fold, part), part,
                                  device, batch_size, progress) for part in ("val", "test")}
    for part in data.values():  # the brain restriction of the map rules
        part["brain"] = brain_masks(store.images, part["index"]["row"].to_numpy())
    out = run.evaluation(channel)
    figures = out / "figures"
    test = data["test"]
    written = write_classification_report(test["labels"], test["probabilities"], classes,
                                          test["patient_ids"], out, figures, label)

    healthy = healthy_index(classes)
    keys = ("heatmaps", "probabilities", "masks", "labels", "patient_ids", "brain")
    chosen = evaluate_with_validation_offset(
        {k: data["val"][k] for k in keys}, {k: test[k] for k in keys}, class_names=classes,
        n_resamples=n_resamples, healthy_class=healthy, workers=workers, channel=channel,
        rules=MAP_RULES, in_brain=(False, True), thresholds=THRESHOLDS)
    published_offset = PUBLISHED_OFFSETS.get(model_name)
    rows = []
    summaries = {"validation-chosen": chosen["summary"]}
    if published_offset is not None:
        scores_pub = score_slices(*(test[k] for k in keys[:4]), offset=published_offset,
                                  cleanup=True, healthy_class=healthy, workers=workers,
                                  channel=channel)
        summaries["published"] = segmentation_summary(
            scores_pub, test["patient_ids"][scores_pub["row"].to_numpy()], classes, healthy,
            n_resamples)
    for setting, table in summaries.items():
        rows.append(table.assign(setting=setting))
    seg = pd.concat(rows, ignore_index=True)
    seg.insert(0, "run", label)
    written += write_table(seg, out / "segmentation_summary")
    write_table(chosen["grid"], out / "offset_grid_validation")
    choice = {**chosen["choice"], "published_offset": published_offset,
              "chosen_on": "validation patients", "label": label}
    with atomic_path(run.offset_choice_file(channel)) as tmp:
        tmp.write_text(json.dumps(choice, indent=2, default=float) + "\n")
    scores = chosen["scores"]
    scores = scores.assign(patient_id=test["patient_ids"][scores["row"].to_numpy()])
    write_table(scores, out / "segmentation_slices")
    write_table(patient_dice_3d(chosen["scores"], test["patient_ids"][
        chosen["scores"]["row"].to_numpy()]), out / "patient_dice_3d")
    _dice_figure(scores, classes, f"Weakly-supervised segmentation: {label}",
                 figures / "dice_distribution")

    fidelity = confidence_fidelity(chosen["scores"], scores["patient_id"].to_numpy(),
                                   n_resamples)
    write_table(pd.DataFrame([{"run": label, **fidelity}]), out / "confidence_fidelity")
    fig = plot_confidence_dice(chosen["scores"], fidelity, f"Confidence vs fidelity: {label}")
    save_figure(fig, figures / "confidence_vs_dice")
    channels = list(store.meta.get("channels") or [])
    fig = plot_example_grid(chosen["scores"], _Rows(store.images, test["index"]["row"]),
                            test["heatmaps"], test["masks"], classes,
                            MaskRule.from_choice(chosen["choice"]),
                            f"Best, median and worst test slices: {label}",
                            channels.index("t1ce") if "t1ce" in channels else 0, healthy)
    save_figure(fig, figures / "example_grid")
    import matplotlib.pyplot as plt

    plt.close("all")
    return out


class _Rows:
    """``rows_view[i]`` is ``array[rows[i]]``, read lazily from a memory-mapped store."""

    def __init__(self, array, rows):
        self.array, self.rows = array, np.asarray(rows)

    def __getitem__(self, i):
        return self.array[self.rows[i]]


def add_cli(sub) -> None:
    p = sub.add_parser("evaluate", help="classification and segmentation metrics, tables and "
                                        "figures for a training run")
    p.add_argument("run_dir", nargs="*", help="training run folder(s)")
    p.add_argument("--checkpoint", help="instead of a run folder: a released model "
                   "(hf://owner/name[@revision]) or a checkpoint file, scored on --fold of "
                   "--split over --store; its run folder is written to --out "
                   "(gpcore.evaluation.external)")
    p.add_argument("--store", help="with --checkpoint: slice store folder")
    p.add_argument("--split", help="with --checkpoint: split CSV of the store's patients")
    p.add_argument("--fold", type=int, default=0, help="with --checkpoint: outer fold (0)")
    p.add_argument("--out", help="with --checkpoint: the run folder to write")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--resamples", type=int, default=10000, help="patient bootstrap resamples")
    p.add_argument("--workers", type=int, help="processes for scoring (default: all cores)")
    p.add_argument("--channel", choices=("predicted", "true"), default="predicted",
                   help="heatmap channel thresholded: predicted class (published) or true class")
    p.add_argument("--folds-out", help="with several run folders (one per fold): also write "
                                       "the fold summary and pooled results here")
    p.set_defaults(func=_evaluate_cli)


def _evaluate_cli(args) -> int:
    if args.checkpoint:
        missing = [f"--{k}" for k in ("store", "split", "out") if not getattr(args, k)]
        if missing or args.run_dir:
            raise ValueError("--checkpoint needs --store, --split and --out (and no run folder)"
                             + (f"; missing {', '.join(missing)}" if missing else ""))
        from .external import adopt_checkpoint

        args.run_dir = [adopt_checkpoint(args.checkpoint, args.store, args.split, args.fold,
                                         args.out)]
    elif not args.run_dir:
        raise ValueError("give run folder(s), or --checkpoint with --store, --split and --out")
    for run in args.run_dir:
        print(evaluate(run, args.device, args.batch_size, args.resamples, args.workers,
                       channel=args.channel))
    if args.folds_out:
        print(aggregate_folds(args.run_dir, args.folds_out, args.resamples))
    return 0


def aggregate_folds(run_dirs: list[str | Path], out_dir: str | Path,
                    n_resamples: int = 10000) -> Path:
    """Across evaluated runs of the same model (one per outer fold): classification mean ± std
    over folds and pooled out-of-fold metrics and curves; segmentation over the pooled test
    slices of all folds, with patient-bootstrap CIs (each patient is in one test fold)."""
    from .classification import (plot_roc_pr, pooled_metrics, slice_metrics,
                                            summarise_folds)
    from .segmentation import segmentation_summary

    from ..inference.predict import read_predictions

    runs = [RunDir(r) for r in run_dirs]
    per_fold, ys, probs, slices, labels = [], [], [], [], []
    classes = None
    for run in runs:
        choice = run.offset_choice()  # raises "evaluate the run first" when it is not
        classes = classes or run.classes
        fold = run.fold
        test = read_predictions(run.predictions("test"))
        index, prob = test["index"], test["probabilities"]
        per_fold.append(slice_metrics(index["label"].to_numpy(), prob, classes)["summary"]
                        .assign(fold=fold))
        ys.append(index["label"].to_numpy())
        probs.append(prob)
        slices.append(run.evaluation_table("segmentation_slices").assign(fold=fold))
        labels.append(choice["label"])
    out = Path(out_dir)
    pooled = pooled_metrics(ys, probs, classes)
    table = summarise_folds(per_fold, pooled["summary"])
    title = labels[0].rsplit(", fold", 1)[0] + f", {len(runs)} folds pooled"
    table.insert(0, "run", title)
    paths = write_table(table, out / "folds_classification")
    fig = plot_roc_pr(pooled["curves"], f"Pooled out-of-fold: {title}")
    paths += save_figure(fig, out / "figures" / "folds_roc_pr")
    scores = pd.concat(slices, ignore_index=True)
    seg = segmentation_summary(scores, scores["patient_id"].to_numpy(), classes,
                               healthy_index(classes), n_resamples)
    seg.insert(0, "run", title)
    paths += write_table(seg, out / "folds_segmentation_summary")
    return out
