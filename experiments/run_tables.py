"""The command line of the experiments that score a list of runs into one table
(``experiments.map_ceiling``, ``experiments.head_decompose``)."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pandas as pd


def main(prog: str, doc: str, per_run: Callable[[Path], pd.DataFrame], argv=None) -> int:
    """``prog RUN [RUN ...] [--out STEM]``: ``per_run(run)`` for each run, concatenated,
    printed as Markdown and, with ``--out``, written to ``STEM.csv`` / ``STEM.md``."""
    parser = argparse.ArgumentParser(prog=prog, description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="table stem (.csv and .md)")
    args = parser.parse_args(argv)
    from gpcore.io import write_table

    table = pd.concat([per_run(r) for r in args.runs], ignore_index=True)
    print(table.to_markdown(index=False, floatfmt=".3f"))
    if args.out:
        write_table(table, args.out, floatfmt=".3f")
    return 0
