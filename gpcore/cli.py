"""The ``gpcore`` command line. Each sub-command lives beside the code it drives."""
from __future__ import annotations

import argparse
import sys


def _models(args: argparse.Namespace) -> int:
    from .models.profile import model_summary

    table = model_summary(args.size)
    table["parameters"] = table["parameters"].map("{:,}".format)
    table = table.rename(columns={"gflops_per_slice": f"GFLOPs per 4×{args.size}×{args.size}"})
    print(table.to_string(index=False, float_format="{:.2f}".format))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpcore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models", help="list the registered models in their paper configuration "
                                      "with parameters and GFLOPs per slice")
    p.add_argument("--size", type=int, default=240, help="slice size (default 240)")
    p.set_defaults(func=_models)
    from .data.phantom import add_cli as add_phantom
    from .data.prepare import add_cli as add_prepare

    from .compare import add_cli as add_compare
    from .evaluate import add_cli as add_evaluate
    from .inference import add_cli as add_predict
    from .segment import add_cli as add_segment
    from .train import add_cli as add_train

    add_phantom(sub)
    add_prepare(sub)
    add_train(sub)
    add_predict(sub)
    add_segment(sub)
    add_evaluate(sub)
    add_compare(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .models.checkpoints import CheckpointError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CheckpointError as err:  # a bad weights file or Hub name: the message names the fix
        raise SystemExit(f"gpcore {args.command}: {err}") from None


if __name__ == "__main__":
    sys.exit(main())
