"""Run the study's notebooks headless with papermill: ``python -m gpcore.study`` (run_all.sh).

Each stage is a parameterised notebook in ``notebooks/``. Executed copies are saved under
``results/<study>/<profile>/notebooks/``, figures under ``figures/<study>/<profile>/`` and tables
under ``results/<study>/<profile>/``. A stage whose notebook, parameters and gpcore sources are
unchanged since its last successful run is skipped, so an interrupted study resumes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..machine import describe

#: the repository checkout (notebooks/, results/, figures/, runs/): the study runs from a clone
ROOT = Path(__file__).resolve().parents[2]
STUDIES = ("phantom", "brats2020", "figshare")
PROFILES = ("smoke", "quick", "paper")
KERNEL = "gpcore"


@dataclass(frozen=True)
class Stage:
    name: str
    notebook: str


# Stages in execution order; each reads what the earlier ones wrote.
STAGES = (Stage("models", "01_models.ipynb"), Stage("data", "02_data.ipynb"),
          Stage("training", "03_training.ipynb"), Stage("classification", "04_classification.ipynb"),
          Stage("segmentation", "05_segmentation.ipynb"), Stage("baselines", "06_baselines.ipynb"),
          Stage("agreement", "07_agreement.ipynb"), Stage("efficiency", "08_efficiency.ipynb"),
          Stage("explorer", "09_threshold_explorer.ipynb"))


def _sources_digest() -> str:
    """Hash of gpcore's sources and of gpcore/configs (profiles, model and training defaults): a code
    or configuration change re-runs the stages (training then retrains only the runs whose
    configuration changed, :func:`gpcore.study.pipeline.set_aside_if_stale`)."""
    h = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    files = sorted(package.rglob("*.py")) + sorted(package.rglob("*.yaml"))
    for path in files:
        h.update(path.relative_to(package.parent).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _record_stage(results: Path, name: str, seconds: float) -> None:
    path = results / "stage_times.json"
    times = json.loads(path.read_text()) if path.is_file() else {}
    times[name] = round(seconds, 1)
    path.write_text(json.dumps(times, indent=2) + "\n")


def _write_environment(results: Path) -> None:
    import datetime

    import torch

    path = results / "stage_times.json"
    times = json.loads(path.read_text()) if path.is_file() else {}
    env = {"machine": describe(), "torch": str(torch.__version__),
           "finished": datetime.datetime.now().isoformat(timespec="seconds"),
           "stage_seconds": times, "study_minutes": round(sum(times.values()) / 60, 1)}
    (results / "environment.json").write_text(json.dumps(env, indent=2) + "\n")


def shared_dir() -> Path:
    return Path(os.environ.get("GPCORE_SHARED", ROOT.parent / "shared"))


def run_study(study: str = "phantom", profile: str = "quick", data: str | None = None,
              force: bool = False, stages: list[str] | None = None, folds: str | None = None,
              output_root: Path = ROOT, stage_list: tuple[Stage, ...] = STAGES,
              notebooks_dir: Path = ROOT / "notebooks") -> int:
    """Execute the stages; return 0, or 1 after the first failing stage.

    ``output_root`` holds ``results/`` and ``figures/``; ``stage_list`` and ``notebooks_dir``
    exist for tests.
    """
    import papermill as pm

    if study != "phantom" and data is None:
        raise SystemExit(f"--study {study} needs --data PATH to the dataset folder")
    if data is not None and not Path(data).exists():
        raise SystemExit(f"--data {data}: no such folder")
    if folds:
        from ..configs import load_profile
        from .pipeline import parse_folds

        n_folds = int((load_profile(profile, study).get("data") or {}).get("folds", 5))
        try:
            folds = ",".join(map(str, parse_folds(folds, n_folds)))
        except ValueError as err:
            raise SystemExit(f"--folds: {err}") from None
    results = Path(output_root) / "results" / study / profile
    figures = Path(output_root) / "figures" / study / profile
    executed = results / "notebooks"
    executed.mkdir(parents=True, exist_ok=True)
    values = {"study": study, "profile": profile, "results_dir": str(results),
              "figures_dir": str(figures), "shared_dir": str(shared_dir()),
              "data_dir": str(Path(data).resolve()) if data else "",
              "work_dir": str(Path(output_root) / "data" / study / profile),
              "runs_dir": str(Path(output_root) / "runs" / study / profile),
              "folds": folds or ""}
    code = _sources_digest()
    for stage in stage_list:
        if stages and stage.name not in stages:
            continue
        src = Path(notebooks_dir) / stage.notebook
        declared = pm.inspect_notebook(str(src))
        params = {k: v for k, v in values.items() if k in declared}
        key = hashlib.sha256(src.read_bytes() + json.dumps(params, sort_keys=True).encode()
                             + code.encode()).hexdigest()
        stamp = executed / f"{src.stem}.done"
        if not force and stamp.is_file() and stamp.read_text().strip() == key:
            print(f"[study] {stage.name}: unchanged since its last run, skipped")
            continue
        out = executed / stage.notebook
        print(f"[study] {stage.name}: running {src} -> {out}")
        stamp.unlink(missing_ok=True)
        started = time.time()
        try:
            pm.execute_notebook(str(src), str(out), parameters=params, kernel_name=KERNEL,
                                cwd=str(src.parent), progress_bar=True)
        except pm.PapermillExecutionError as err:
            print(f"[study] {stage.name} FAILED: {err.ename}: {err.evalue}\n"
                  f"[study] the executed notebook with the error is {out}", file=sys.stderr)
            return 1
        stamp.write_text(key + "\n")
        _record_stage(results, stage.name, time.time() - started)
    _write_environment(results)
    print(f"[study] done: tables in {results}, figures in {figures}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", choices=STUDIES, default="phantom")
    parser.add_argument("--profile", choices=PROFILES, default="quick")
    parser.add_argument("--data", help="dataset folder (BraTS 2020 or Figshare) for real studies")
    parser.add_argument("--stage", action="append", choices=[s.name for s in STAGES],
                        help="run only this stage (repeatable)")
    parser.add_argument("--force", action="store_true", help="re-run stages even if unchanged")
    parser.add_argument("--folds", help="folds to train and evaluate: 'all' or e.g. '0,2' "
                        "(default: the profile's, fold 0 for smoke and quick); with more than "
                        "one, the tables add mean ± sd over folds and the pooled test patients")


def run(args: argparse.Namespace) -> int:
    return run_study(args.study, args.profile, args.data, args.force, args.stage, args.folds)


def add_cli(sub) -> None:
    p = sub.add_parser("study", help="run the study's notebooks headless (what run_all.sh runs)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    from ..errors import standalone_main

    return standalone_main("run_all.sh", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
