"""``python -m gpcore.training.cli`` / ``gpcore train``: train a model on a slice store.

Multi-GPU or multi-node: ``torchrun --nproc_per_node=N -m gpcore train ...`` (DDP; the batch
size is per process, so the global batch is N × batch_size × accumulate).
"""
from __future__ import annotations

import argparse
import sys

from ..models import list_models
from ..configs import CONFIGS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, help="slice store folder (gpcore preprocess)")
    p.add_argument("--split", required=True, help="split CSV (gpcore split)")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--model", default="gp_unet", choices=list_models())
    p.add_argument("--profile", default="quick",
                   help="smoke | quick | paper, or a profile YAML (gpcore/configs/profiles)")
    p.add_argument("--study", help="apply the profile's sections for this study "
                   "(its studies: section, e.g. figshare)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last completed epoch")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help=f"override any setting of {CONFIGS / 'train.yaml'}, e.g. train.epochs=3 "
                        f"model.wf=4")


def run(args: argparse.Namespace) -> int:
    from . import train

    train(args.store, args.split, args.out, model=args.model, fold=args.fold,
          profile=args.profile, overrides=args.overrides, resume=args.resume,
          progress=not args.no_progress, study=args.study)
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("train", help="train a model on a slice store (single process or torchrun)")
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    from ..errors import standalone_main

    return standalone_main("python -m gpcore.training.cli", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
