"""The ``gpcore`` command line. Each sub-command lives beside the code it drives."""
from __future__ import annotations

import argparse
import sys


def _models(args: argparse.Namespace) -> int:
    from .models.profile import model_summary

    if args.size < 16 or args.size % 16:  # every model down-samples by up to 16
        raise ValueError(f"--size {args.size}: the slice size must be a positive multiple of "
                         f"16, e.g. 240 (BraTS) or 64 (quick)")
    table = model_summary(args.size)
    table["parameters"] = table["parameters"].map("{:,}".format)
    table = table.rename(columns={"gflops_per_slice": f"GFLOPs per 4×{args.size}×{args.size}"})
    print(table.to_string(index=False, float_format="{:.2f}".format))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpcore", description=__doc__)
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (anywhere on the command line; "
                             "or GPCORE_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models", help="list the registered models in their paper configuration "
                                      "with parameters and GFLOPs per slice")
    p.add_argument("--size", type=int, default=240, help="slice size (default 240)")
    p.set_defaults(func=_models)
    from .data.phantom import add_cli as add_phantom
    from .data.prepare import add_cli as add_prepare

    from .evaluation.compare import add_cli as add_compare
    from .evaluation.run import add_cli as add_evaluate
    from .explanations.run import add_cli as add_explain
    from .inference.predict import add_cli as add_predict
    from .inference.segment import add_cli as add_segment
    from .study.report import add_cli as add_report
    from .study.runner import add_cli as add_study
    from .training.cli import add_cli as add_train

    # in pipeline order: data -> training -> inference -> evaluation -> explanations -> study
    for add in (add_phantom, add_prepare, add_train, add_predict, add_segment, add_evaluate,
                add_compare, add_explain, add_study, add_report):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a sub-command; bad input ends in one line ``gpcore <command>: error: ...`` and
    exit status 2 (:mod:`gpcore.errors`)."""
    from .errors import one_line_errors

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted after the sub-command too
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    with one_line_errors(f"gpcore {args.command}", debug):
        return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
