"""Probes behind docs/recipe.md round 3, item 1 (issue 13): would a different classification
gate, or a prior-corrected classifier, rescue the folds whose tumour slices get no mask?

    python -m experiments.gate_probe [--suffix .stale-YYYYMMDD-HHMMSS] [--out logs/gate_probe]

For each GP study run ``runs/phantom/quick/<model>/fold<k><suffix>`` (round 3 measured the
round-2 runs, set aside as ``fold<k>.stale-...`` when the profile changed):

* **gate**: the published gate (argmax = Healthy -> empty mask) against the detection gate
  P(Healthy) < 0.5 (the slice gets its most probable tumour class's mask); the map rule,
  threshold and offset are chosen on validation for each gate (evidence / predicted map inside
  the brain, relative threshold), then scored on validation and test: median Dice over tumour
  slices, share of tumour slices left without a mask, healthy-slice false-positive rate.
* **prior**: macro-F1 of ``argmax(logits - tau * log prior_train)`` for tau in {0, 0.5, 1}
  (logit adjustment), on validation and test.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

MODELS = ("gp_unet", "gp_shuffle_unet", "gp_recon_resnet")


def _load(run: Path):
    import yaml

    from gpcore.data.splits import load_split, split_rows
    from gpcore.data.store import SliceStore
    from gpcore.inference.predict import run_predictions
    from gpcore.inference.maps import brain_masks

    record = yaml.safe_load((run / "config.yaml").read_text())
    store = SliceStore(record["store"]["path"])
    split, fold = load_split(run / "split.csv"), int(record["split"]["fold"])
    data = {p: run_predictions(run, store, split_rows(split, store.index, fold, p), p, "cpu", 64,
                            False) for p in ("val", "test")}
    for d in data.values():
        d["brain"] = brain_masks(store.images, d["index"]["row"].to_numpy())
    train = split_rows(split, store.index, fold, "train")
    prior = np.bincount(store.index.label.to_numpy()[train], minlength=len(store.classes))
    return store, data, prior / prior.sum()


def gate_rows(loaded, model: str, fold: int) -> list[dict]:
    """``loaded``: :func:`_load`'s ``(store, data, prior)`` of the run."""
    from gpcore.evaluation.segmentation import evaluate_with_validation_offset

    store, data, _ = loaded
    keys = ("heatmaps", "probabilities", "masks", "labels", "patient_ids", "brain")
    rows = []
    for gate in ("argmax", "detection"):
        parts = {}
        for p, d in data.items():
            x = {k: d[k] for k in keys}
            if gate == "detection":  # P(Healthy) < 0.5: the slice is treated as tumour
                probs = x["probabilities"].copy()
                probs[probs[:, 0] < 0.5, 0] = 0.0
                x["probabilities"] = probs
            parts[p] = x
        for part in ("val", "test"):
            r = evaluate_with_validation_offset(
                parts["val"], parts[part], class_names=list(store.classes), n_resamples=200,
                healthy_class=0, workers=1, rules=("predicted", "evidence"), in_brain=(True,),
                thresholds=("relative",))
            s = r["scores"]
            tumour, healthy = s[s.gt_area > 0], s[(s.gt_area == 0) & (s.label == 0)]
            rows.append({"model": model, "fold": fold, "gate": gate, "part": part,
                         "median_dice": float(np.median(tumour.dice.fillna(0))),
                         "tumour_slices_without_mask": float((tumour.mask_area == 0).mean()),
                         "healthy_fp_rate": float((healthy.mask_area > 0).mean()),
                         "rule": f"{r['choice']['rule']}, {r['choice']['threshold']} "
                                 f"{r['choice']['offset']:g}"})
    return rows


def prior_rows(run: Path, loaded, model: str, fold: int) -> list[dict]:
    from sklearn.metrics import f1_score

    _, data, prior = loaded
    rows = []
    for part in ("val", "test"):
        logits = np.load(run / "predictions" / part / "logits.npy").astype(np.float64)
        labels = data[part]["labels"]
        for tau in (0.0, 0.5, 1.0):
            pred = (logits - tau * np.log(prior)).argmax(1)
            rows.append({"model": model, "fold": fold, "part": part, "tau": tau,
                         "macro_f1": f1_score(labels, pred, average="macro")})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.gate_probe",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/phantom/quick")
    parser.add_argument("--suffix", default="", help="run folder suffix, e.g. .stale-...")
    parser.add_argument("--out", default="logs/gate_probe", help="table stem")
    args = parser.parse_args(argv)
    from gpcore.io import write_table

    gates, priors = [], []
    for model in MODELS:
        for fold in range(5):
            run = Path(args.runs) / model / f"fold{fold}{args.suffix}"
            if not run.is_dir():  # not set aside: that model's runs did not change
                run = Path(args.runs) / model / f"fold{fold}"
            if not (run / "best.safetensors").is_file():
                continue
            print(f"[gate_probe] {run}", flush=True)
            loaded = _load(run)  # predictions and brain masks, read once for both probes
            gates += gate_rows(loaded, model, fold)
            priors += prior_rows(run, loaded, model, fold)
    gates, priors = pd.DataFrame(gates), pd.DataFrame(priors)
    write_table(gates, Path(args.out + "_gate"))
    write_table(priors, Path(args.out + "_prior"))
    print(gates.to_string(index=False, float_format="{:.3f}".format))
    print(priors.pivot_table(index=["model", "part"], columns="tau", values="macro_f1")
          .round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
