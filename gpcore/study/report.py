"""The README's results section, generated from the study's tables (never hand-copied).

``gpcore report results/phantom/quick [results/figshare/quick ...] --readme README.md``
replaces, between ``<!-- results:start -->`` and ``<!-- results:end -->``, the section of each
given study (others are kept) with, per results folder: the comparison table
(classification, segmentation, AP, IDS, agreement), the cross-validated tables when the
study ran several folds (``cv_summary``, ``cv_folds``), the training table (epochs, wall
time) and the machine the run was made on (``environment.json``, written by the study
runner).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

from ..io import atomic_path

START, END = "<!-- results:start -->", "<!-- results:end -->"
COMPARISON_COLUMNS = ["model", "macro-F1", "median Dice [95% CI]",
                      "Δ median Dice vs all-brain [95% CI]", "healthy FP rate",
                      "mask rule (val)", "AP (slice mean)", "IDS ↓", "pointing game",
                      "Spearman vs occlusion", "Spearman vs guided BP"]


def _md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=".3g")


def section(results: Path) -> str:
    """Markdown for one ``results/<study>/<profile>`` folder."""
    results = Path(results)
    study, profile = results.parent.name, results.name
    lines = [f"### {study} · {profile}", ""]
    env = results / "environment.json"
    if env.is_file():
        e = json.loads(env.read_text())
        lines += [f"Run on {e.get('machine', '?')}, finished {e.get('finished', '')[:16]} "
                  f"(torch {e.get('torch', '?')}); the latest run of each stage took "
                  f"{e.get('study_minutes', '?')} min in all (a stage that reused cached runs "
                  f"counts only its own time; training times per model below).", ""]
    comparison = results / "comparison.csv"
    if comparison.is_file():
        table = pd.read_csv(comparison, keep_default_na=False)
        run = table["run"].iloc[0]
        lines += [f"**Test patients** ({run}); median Dice over ground-truth tumour slices with a "
                  f"patient-bootstrap 95 % CI, map rule and offset chosen on validation patients (Δ: the "
                  f"model's median minus the all-brain mask's on the same slices, paired "
                  f"bootstrap); AP / IDS as "
                  f"MProtoNet defines them (ground-truth-class maps):", "",
                  _md(table[[c for c in COMPARISON_COLUMNS if c in table.columns]]), ""]
    cv = results / "cv_summary_readable.csv"
    if cv.is_file():
        run = pd.read_csv(results / "cv_summary.csv")["run"].iloc[0]
        lines += [f"**Cross-validated** ({run}): macro-F1 and median Dice as mean ± sd over "
                  f"folds; a fold *localises* when its test median Dice is at least 2× the "
                  f"all-brain mask's; pooled = the test patients of all folds together "
                  f"(patient-bootstrap 95 % CI; Δ: paired difference to the all-brain mask's "
                  f"median Dice on the same slices):", "",
                  _md(pd.read_csv(cv, keep_default_na=False)), ""]
        folds = results / "cv_folds.csv"
        if folds.is_file():
            f = pd.read_csv(folds)
            cols = [c for c in ("model", "fold", "macro_f1", "median_dice",
                                "all_brain_median_dice", "ratio_vs_all_brain",
                                "median_dice_lgg", "mask_rule") if c in f.columns]
            lines += ["Each fold (test patients; mask rule chosen on that fold's validation "
                      "patients):", "", _md(f[cols]), ""]
    training = results / "training.csv"
    if training.is_file():
        t = pd.read_csv(training)
        if "train_seconds" in t.columns:  # whole seconds: ".3g" would print 1040 s as "1.04e+03"
            t["train_seconds"] = t["train_seconds"].round().astype("Int64")
        cols = [c for c in ("model", "fold", "epochs", "best_epoch", "val_macro_f1",
                            "train_seconds") if c in t.columns]
        lines += ["Training (validation macro-F1 of the selected epoch, wall time):", "",
                  _md(t[cols]), ""]
    if len(lines) <= 2:
        lines += [f"(no tables in {results} yet: run `./run_all.sh --study {study} "
                  f"--profile {profile}`)", ""]
    return "\n".join(lines)


def _sections(body: str) -> dict[str, str]:
    """``{"### study · profile": text}`` of a generated results section, in order."""
    parts = re.split(r"(?m)^(?=### )", body)
    return {p.splitlines()[0].strip(): p.rstrip("\n") + "\n" for p in parts
            if p.startswith("### ")}


def update_readme(readme: Path, folders: list[Path]) -> str:
    """Rewrite the README's results section: each folder's study section is replaced (or
    appended); the sections of studies not given are kept as they are, so one study can be
    regenerated without the other's results on this machine."""
    text = Path(readme).read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme}: no '{START}' … '{END}' markers to replace")
    old = _sections(text[text.index(START) + len(START):text.index(END)])
    new_sections = _sections("\n".join(section(f) for f in folders))
    body = "\n".join({**old, **new_sections}.values())
    note = ("<!-- generated by `gpcore report` from the tables under results/; "
            "edit the tables' source, not this text -->")
    new = re.sub(re.escape(START) + ".*?" + re.escape(END),
                 lambda _: f"{START}\n{note}\n\n{body}\n{END}", text, flags=re.S)
    with atomic_path(readme) as tmp:  # a failed write leaves the README as it was
        tmp.write_text(new)
    return body


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", help="results/<study>/<profile> folders")
    parser.add_argument("--readme", help="rewrite this file's results section (else print)")
    parser.add_argument("--figure", help="copy this PNG to docs/figures/overview.png, the "
                                         "README's top figure (e.g. figures/phantom/quick/"
                                         "explanation_grid.png)")


def add_cli(sub) -> None:
    p = sub.add_parser("report", help="the README's results section from results/ folders",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=_report)


def main(argv: list[str] | None = None) -> int:
    from ..errors import standalone_main

    return standalone_main("gpcore report", __doc__, add_arguments, _report, argv)


def _report(args) -> int:
    if args.figure:
        import shutil

        dst = Path(args.readme or "README.md").resolve().parent / "docs/figures/overview.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dst) as tmp:
            shutil.copyfile(args.figure, tmp)
    folders = [Path(f) for f in args.results]
    if args.readme:
        update_readme(Path(args.readme), folders)
        print(f"updated {args.readme} from {', '.join(map(str, folders))}")
    else:
        print("\n".join(section(f) for f in folders))
    return 0


if __name__ == "__main__":
    sys.exit(main())
