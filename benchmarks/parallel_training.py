"""Training the study's runs one after the other (all cores each) or two at a time (half the
cores each), side by side on the same runs: the measurement behind the CPU default of
``gpcore.study.pipeline.train_models(parallel=None)``.

    python -m benchmarks.parallel_training --store data/phantom/quick/store_64 \\
        --split data/phantom/quick/split.csv [--profile quick] [--epochs 2]
        [--models gp_unet,gp_shuffle_unet,gp_recon_resnet]

Each mode trains every model for ``--epochs`` epochs into a fresh temporary folder with the
profile's settings; prints the wall time of each mode and their ratio.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from gpcore.study.efficiency import environment
from gpcore.study.pipeline import train_models


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True)
    parser.add_argument("--split", required=True)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--models", default="gp_unet,gp_shuffle_unet,gp_recon_resnet")
    args = parser.parse_args(argv)
    models = args.models.split(",")
    env = environment()
    seconds = {}
    for mode, parallel in (("one at a time", 1), ("two at a time", 2)):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            train_models(args.store, args.split, Path(tmp), args.profile, models, [0],
                         overrides=[f"train.epochs={args.epochs}"], progress=False,
                         parallel=parallel, follow_up=False)
            seconds[mode] = time.perf_counter() - start
    print(f"\n{env['date']}: {env['cpu']}, {env['cores']} cores, torch {env['torch']}; "
          f"profile {args.profile}, {args.epochs} epochs of {', '.join(models)}\n")
    print("| mode | wall s |\n|---|---:|")
    for mode, s in seconds.items():
        print(f"| {mode} | {s:.1f} |")
    print(f"\none at a time / two at a time: "
          f"{seconds['one at a time'] / seconds['two at a time']:.2f}×")


if __name__ == "__main__":
    main()
