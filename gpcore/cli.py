"""The ``gpcore`` command line. Each sub-command lives beside the code it drives."""
from __future__ import annotations

import argparse
import sys


def _models(args: argparse.Namespace) -> int:
    from .models import create_model, list_models
    from .models.profile import count_flops, count_parameters

    print(f"{'model':<18}{'parameters':>14}" + (f"{'GFLOPs':>10}" if args.flops else ""))
    for name in list_models():
        model = create_model(name)
        row = f"{name:<18}{count_parameters(model):>14,}"
        if args.flops:
            row += f"{count_flops(model, (1, 4, args.size, args.size)) / 1e9:>10.2f}"
        print(row)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpcore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models", help="list the registered models with their sizes "
                                      "(paper configuration)")
    p.add_argument("--flops", action="store_true", help="also count GFLOPs per slice")
    p.add_argument("--size", type=int, default=240, help="slice size for --flops (default 240)")
    p.set_defaults(func=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
