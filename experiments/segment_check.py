"""Does ``gpcore segment`` reproduce ``gpcore evaluate``'s per-patient 3D Dice? (issue 15)

    python -m experiments.segment_check runs/phantom/quick/gp_unet/fold0 [--out docs/segment_check]

Segments the run's **test** subjects from the phantom's BraTS-layout folder with the run's
checkpoint and its validation-chosen mask rule (``offset_choice.json``), exactly as a user
would (``gpcore segment``: native 240x240 slices, heatmaps resized back, the rule applied at
native size), then scores the written NIfTI masks against the subjects' segmentations and
sets them beside ``evaluate``'s 3D Dice (``evaluation/patient_dice_3d.csv``, computed on the
store's 64x64 slices). The two differ only by resolution: thresholding at 240 px after
bilinear upsampling vs at the training size.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd


def check(run: Path) -> pd.DataFrame:
    """Per test patient of ``run``: ``evaluate``'s 3D Dice beside the segmented NIfTI's."""
    import nibabel as nib
    import yaml

    from gpcore.data.splits import load_split
    from gpcore.evaluation.segmentation import dice_iou
    from gpcore.data.store import SliceStore
    from gpcore.inference.segment import segment

    record = yaml.safe_load((run / "config.yaml").read_text())
    store = SliceStore(record["store"]["path"])
    root = Path(store.meta["params"]["source"]["root"])
    fold = int(record["split"]["fold"])
    split = load_split(run / "split.csv")
    patients = sorted(split.loc[(split["fold"] == fold) & (split["part"] == "test"),
                                "patient_id"].astype(str))
    evaluated = pd.read_csv(run / "evaluation" / "patient_dice_3d.csv",
                            dtype={"patient_id": str}).set_index("patient_id")
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "subjects"
        inputs.mkdir()
        for pid in patients:
            (inputs / pid).symlink_to(root / pid, target_is_directory=True)
        out = Path(tmp) / "segmented"
        segment(run / "best.safetensors", inputs, out, progress=False)
        table = []
        for pid in patients:
            mask = np.asanyarray(nib.load(out / pid / f"{pid}_mask.nii.gz").dataobj) > 0
            gt = np.asanyarray(nib.load(root / pid / f"{pid}_seg.nii.gz").dataobj) > 0
            table.append({"patient_id": pid,
                          "evaluate_dice_3d (64 px)": float(evaluated.loc[pid, "dice_3d"]),
                          "segment_dice_3d (240 px NIfTI)": dice_iou(mask, gt)[0]})
    table = pd.DataFrame(table)
    table["difference"] = (table["segment_dice_3d (240 px NIfTI)"]
                           - table["evaluate_dice_3d (64 px)"])
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.segment_check",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="+", help="evaluated run folder(s)")
    parser.add_argument("--out", help="table stem (CSV + Markdown)")
    args = parser.parse_args(argv)
    tables = [check(Path(r)).assign(run=r) for r in args.run]
    table = pd.concat(tables, ignore_index=True)
    if args.out:
        from gpcore.io import write_table

        write_table(table, Path(args.out))
    print(table.to_string(index=False, float_format="{:.3f}".format))
    print(f"mean |difference| {table['difference'].abs().mean():.3f}, max "
          f"{table['difference'].abs().max():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
