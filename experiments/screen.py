"""Threshold-free screen of finished runs on their fold's validation patients (issue 13,
recipe round 2): does each run's map localise at all?

    python -m experiments.screen runs/recipe/phantom-quick/unweighted/gp_unet/fold*-seed1701

Per run, over the validation tumour slices: selected epoch and its macro-F1; the share
predicted Healthy (an empty mask whatever the threshold); the median pixel AUROC inside the
brain of the tumour-evidence map and of the last tumour class's map (HGG);
where that map peaks: outside the brain, or on the tumour. Test patients are never read.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def screen(run: Path) -> dict:
    from gpcore.evaluation.segmentation import map_auroc_per_slice

    from .recipe import validation

    val = validation(run)
    masks = np.asarray(val["masks"]) > 0
    rows = np.flatnonzero(masks.reshape(len(masks), -1).any(1))
    brain, healthy = val["brain"], val["healthy"]
    last = next(c for c in reversed(range(val["heatmaps"].shape[1])) if c != healthy)
    peaks = [int(np.argmax(np.asarray(val["heatmaps"][r, last], np.float32))) for r in rows]
    summary = json.loads((run / "summary.json").read_text())
    return {
        "run": str(run), "val_macro_f1": summary["best"]["val_macro_f1"],
        "best_epoch": summary["best_epoch"],
        "predicted_healthy": float(np.mean(val["probabilities"][rows].argmax(1) == healthy)),
        "auroc_evidence": float(np.nanmedian(map_auroc_per_slice(
            val["heatmaps"], val["masks"], rows, "evidence", brain, healthy, val["labels"]))),
        "auroc_last_class": float(np.nanmedian(map_auroc_per_slice(
            val["heatmaps"], val["masks"], rows, "predicted", brain, healthy))),
        "peak_outside_brain": float(np.mean([not brain[r].flat[p] for r, p in zip(rows, peaks)])),
        "peak_on_tumour": float(np.mean([masks[r].flat[p] for r, p in zip(rows, peaks)])),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.screen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for run in args.runs:
        if not (run / "best.safetensors").is_file():
            print(f"{run}: not finished, skipped")
            continue
        r = screen(run)
        print(f"{r['run']}: macro-F1 {r['val_macro_f1']:.3f} (epoch {r['best_epoch']}), "
              f"predicted Healthy {r['predicted_healthy']:.2f}, AUROC evidence "
              f"{r['auroc_evidence']:.2f} / last class {r['auroc_last_class']:.2f}, peak "
              f"outside brain {r['peak_outside_brain']:.2f} / on tumour "
              f"{r['peak_on_tumour']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
