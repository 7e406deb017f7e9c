"""The study's steps, called by the notebooks (which stay thin): which models and folds a
profile trains, training them resumably, evaluating them, and gathering their per-run tables
and figures into ``results/<study>/<profile>/`` and ``figures/<study>/<profile>/``.

Run folders: ``runs/<study>/<profile>/<model>/fold<k>/`` (:class:`gpcore.rundir.RunDir`).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from ..rundir import RunDir, find_runs  # noqa: F401  (find_runs: the notebooks' entry)

#: every model of the study, in table order: the three GP models, then the baselines
STUDY_MODELS = ("gp_unet", "gp_shuffle_unet", "gp_recon_resnet", "mprotonet", "cnn_gradcam")

#: how tables and figure titles name each study's data
DATASETS = {"phantom": "synthetic phantom (BraTS 2020 layout)", "brats2020": "BraTS 2020",
            "figshare": "Figshare (Cheng et al.)"}


class NotebookContext(NamedTuple):
    """What a stage notebook works with, from its papermill parameters."""

    work_dir: Path      # slice store and split (data stage)
    runs_dir: Path      # training runs: <model>/fold<k>
    results_dir: Path
    figures_dir: Path
    plan: dict          # :func:`study_plan`: models and folds
    label: str          # e.g. "synthetic phantom (BraTS 2020 layout), patient-level split, ..."


def notebook_context(study: str, profile: str, folds: str = "", work_dir: str = "",
                     runs_dir: str = "", results_dir: str = "", figures_dir: str = ""
                     ) -> NotebookContext:
    """The set-up every stage notebook shares: its folders as paths, the study plan, the
    label of its tables and figures; figures render off-screen (headless papermill)."""
    import matplotlib

    matplotlib.use("Agg")
    label = f"{DATASETS[study]}, patient-level split, profile {profile}"
    return NotebookContext(Path(work_dir), Path(runs_dir), Path(results_dir), Path(figures_dir),
                           study_plan(profile, folds or None, study), label)


def study_plan(profile: str, folds: str | list[int] | None = None,
               study: str | None = None) -> dict:
    """``{"models": [...], "folds": [...]}`` of a profile (section ``study:``); default: all
    models, fold 0 only for smoke/quick, every fold for paper. ``folds`` overrides the
    profile's: ``"all"``, ``"0,2"`` or a list (``./run_all.sh --folds``)."""
    from ..configs import load_profile

    prof = load_profile(profile, study)
    plan = dict(prof.get("study") or {})
    n = int((prof.get("data") or {}).get("folds", 5))
    if folds is not None:
        folds = parse_folds(folds, n)
    else:
        folds = plan.get("folds")
    if folds is None or folds == "all":
        folds = list(range(n)) if folds == "all" or profile == "paper" else [0]
    return {"models": list(plan.get("models") or STUDY_MODELS), "folds": [int(f) for f in folds]}


def parse_folds(folds: str | list[int], n_folds: int) -> list[int]:
    """``"all"`` -> ``[0, ..., n_folds - 1]``; ``"0,2"`` -> ``[0, 2]``; checked against
    ``n_folds``."""
    if isinstance(folds, str):
        text = folds.strip()
        if text == "all":
            return list(range(n_folds))
        try:
            folds = [int(f) for f in text.split(",") if f.strip()]
        except ValueError:
            raise ValueError(f"folds must be 'all' or comma-separated fold numbers such as "
                             f"'0,2', got {text!r}") from None
    folds = sorted(set(int(f) for f in folds))
    bad = [f for f in folds if not 0 <= f < n_folds]
    if bad or not folds:
        raise ValueError(f"folds {bad or folds} out of range: this profile has {n_folds} "
                         f"folds (0..{n_folds - 1})")
    return folds


def train_models(store_dir: str | Path, split: str | Path, runs_dir: str | Path, profile: str,
                 models: list[str], folds: list[int], overrides: list[str] | None = None,
                 progress: bool = True, parallel: int | None = None,
                 study: str | None = None, follow_up: bool = True
                 ) -> dict[tuple[str, int], RunDir]:
    """Train every (model, fold) not yet finished; an interrupted run resumes from last.pt, a
    run of another configuration is set aside (:func:`set_aside_if_stale`) and retrained.

    ``parallel``: runs trained at once, each in its own process with ``cores // parallel``
    torch threads. Default (None): 2 when every run trains on the CPU and there are >= 2
    cores - small models scale poorly across threads, so two 1-thread runs side by side
    finish sooner than one after the other with 2 threads each - else 1.

    ``follow_up``: as soon as a run is trained, evaluate it (and explain it, on the first fold:
    :func:`follow_up_run`) in the same pool, after the trainings still queued. The slowest
    training run sets the stage's length; the other worker would idle meanwhile. The later
    stages find these results cached (same calls, same settings).
    """
    from tqdm.auto import tqdm

    from ..training.config import resolve_config
    from ..training.engine import train_device

    runs, todo = {}, []
    for model in models:
        for fold in folds:
            cfg = resolve_config(profile, model, overrides, study)
            run = RunDir.of(runs_dir, model, fold)
            set_aside_if_stale(run, cfg, store_dir, split)
            if not run.is_trained:
                todo.append((model, fold, run, train_device(cfg).type))
            runs[(model, fold)] = run
    if parallel is None:
        cpu_only = all(device == "cpu" for *_, device in todo)
        parallel = 2 if cpu_only and (os.cpu_count() or 1) >= 2 else 1
    parallel = max(1, min(int(parallel), len(todo)))
    jobs = [dict(store_dir=store_dir, split=split, run=run, model=model, fold=fold,
                 profile=profile, overrides=overrides, study=study)
            for model, fold, run, _ in todo]
    # runs trained earlier whose follow-up is missing (an interrupted study) queue after these
    training = {(model, fold) for model, fold, *_ in todo}
    pending = [key for key, run in runs.items() if follow_up and key not in training
               and needs_follow_up(run, key[1] == folds[0])]

    def follow(key: tuple[str, int]) -> dict:
        return dict(run=runs[key], profile=profile, study=study, explain=key[1] == folds[0])

    if parallel == 1:
        for job in jobs:
            _train_job(**job, progress=progress)
            if follow_up:
                _follow_up_job(**follow((job["model"], job["fold"])), workers=None)
        for key in pending:
            _follow_up_job(**follow(key), workers=None)
        return runs
    threads = max(1, (os.cpu_count() or 1) // parallel)
    print(f"[training] {len(jobs)} runs, {parallel} at a time with {threads} torch thread(s) "
          f"each{'; each evaluated as soon as it is trained' if follow_up else ''}", flush=True)
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch state
    # Jobs go to the pool only when a worker is free, so that each follow-up's thread count
    # is chosen when it starts: all cores when nothing else runs or waits (same numbers,
    # tests/test_pipeline.py), else one worker's. Trainings first; then the follow-ups, the
    # run that trained longest first (its evaluation is the longest: GP-ShuffleUNet's).
    trains, follows = list(jobs), [(0.0, key) for key in pending]  # (training seconds, run)
    running = {}
    with ProcessPoolExecutor(parallel, mp_context=ctx, initializer=_init_worker,
                             initargs=(threads,)) as pool, \
            tqdm(total=len(jobs), desc="training runs", unit="run", disable=not progress) as bar:
        while trains or follows or running:
            while (trains or follows) and len(running) < parallel:
                if trains:
                    job = trains.pop(0)
                    running[pool.submit(_train_job, **job, progress=False)] = ("train", job)
                    continue
                follows.sort(key=lambda f: -f[0])  # stable: ties keep their order
                _, key = follows.pop(0)
                cores = threads * parallel if not (follows or running) else threads
                running[pool.submit(_follow_up_job, **follow(key), workers=cores,
                                    threads=cores)] = ("follow", key)
            done = next(as_completed(running))
            kind, job = running.pop(done)
            if kind == "follow":
                seconds, error = done.result()
                bar.write(f"[training] {job[0]} fold {job[1]}: " + (
                    f"evaluated in {seconds:.0f} s" if error is None else
                    f"evaluation or explanation failed ({error}); the stage that needs it "
                    f"runs it again"))
                continue
            seconds = done.result()  # re-raises a failed run's error (it names the run)
            bar.update(1)
            bar.write(f"[training] {job['model']} fold {job['fold']}: finished in "
                      f"{seconds:.0f} s")
            if follow_up:
                follows.append((seconds, (job["model"], job["fold"])))
    return runs


def needs_follow_up(run: RunDir, explain: bool) -> bool:
    """Whether :func:`follow_up_run` has anything left to do for a trained run."""
    return run.is_trained and (not run.is_evaluated() or
                               (explain and not (run.explanations / "explain.json").is_file()))


def follow_up_run(run: RunDir, profile: str, study: str | None = None, explain: bool = True,
                  workers: int | None = None, progress: bool = False) -> None:
    """What the later stages compute per run, done right after its training: ``evaluate``
    (as :func:`evaluate_runs`) and, with ``explain``, the explanation metrics of the
    baselines stage (``explain_run`` with the profile's settings and the fold's figure
    slices, as ``gpcore.evaluation.compare`` asks for them), so that the stages reuse them."""
    from ..evaluation.compare import figure_positions
    from ..explanations.run import ExplainConfig, explain_run, load_run

    run = RunDir(run)
    if not run.is_evaluated():
        evaluate_run(run, workers=workers, progress=progress)
    if explain:  # the same test slices in every run of a fold, so any run's give the figure's
        positions = figure_positions(load_run(run)["test"])
        explain_run(run, ExplainConfig.from_profile(profile, study), "cpu", positions,
                    progress=progress)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _train_job(store_dir, split, run: RunDir, model: str, fold: int, profile: str, overrides,
               progress: bool, study: str | None = None) -> float:
    """One training run (resumed when it has a last.pt); returns its wall seconds."""
    from ..training import train

    run = RunDir(run)
    start = time.perf_counter()
    try:
        train(store_dir, split, run.path, model=model, fold=fold, profile=profile,
              overrides=overrides, resume=run.resume_state.is_file(), progress=progress,
              study=study)
    except Exception as err:
        raise RuntimeError(f"training {model} fold {fold} into {run} failed: {err}") from err
    return time.perf_counter() - start


def _follow_up_job(run: RunDir, profile: str, study: str | None, explain: bool,
                   workers: int | None, threads: int | None = None) -> tuple[float, str | None]:
    """:func:`follow_up_run` in a pool worker (``threads``: torch threads for this job, then
    back): (wall seconds, None) or (seconds, the error) - a failed follow-up does not stop
    the training stage; the later stage that needs it runs it again and reports there."""
    from ..machine import torch_threads

    start = time.perf_counter()
    with torch_threads(threads):
        try:
            follow_up_run(run, profile, study, explain, workers)
        except Exception as err:  # noqa: BLE001
            # reported, and retried by the stage that needs it
            return time.perf_counter() - start, f"{type(err).__name__}: {err}"
    return time.perf_counter() - start, None


def _training_config(cfg: dict | None) -> dict | None:
    """What a run was trained with: its configuration less the ``study`` label (recorded when
    the profile has sections for that study; a section added for one model must not make
    the other models' runs of that study stale)."""
    return None if cfg is None else {k: v for k, v in cfg.items() if k != "study"}


def stale_reasons(run: RunDir, wanted: dict, store_dir: str | Path | None = None,
                  split: str | Path | None = None) -> list[str]:
    """What makes a begun run folder other than the run the study would train now: any of
    "configuration", "slice store" (rebuilt since), "split"; empty if it is current or absent."""
    run = RunDir(run)
    if not run.config_file.is_file():
        return []
    record = run.record
    changed = []
    if _training_config(record.get("config")) != _training_config(wanted):
        changed.append("configuration")
    if store_dir is not None and (Path(store_dir) / "store.json").is_file():
        created = json.loads((Path(store_dir) / "store.json").read_text()).get("created")
        if (record.get("store") or {}).get("created") != created:
            changed.append("slice store")
    if split is not None and run.split_file.is_file() and \
            run.split_file.read_bytes() != Path(split).read_bytes():
        changed.append("split")
    return changed


def set_aside_if_stale(run: RunDir, wanted: dict, store_dir: str | Path | None = None,
                       split: str | Path | None = None) -> Path | None:
    """A run folder begun with another configuration than ``wanted`` (e.g. the profile's widths
    were edited since), on another slice store (rebuilt, e.g. more phantom subjects) or on
    another split must not be reused or resumed: rename it to ``<fold>.stale-<time>`` (nothing
    is deleted) and return the new path; None if it is current or absent."""
    run = RunDir(run)
    changed = stale_reasons(run, wanted, store_dir, split)
    if not changed:
        return None
    stale = run.set_aside()
    print(f"[study] {run}: trained with another {' and '.join(changed)} than now; moved to "
          f"{stale.name} and retraining", flush=True)
    return stale.path


def training_table(runs: dict) -> pd.DataFrame:
    rows = []
    for (model, fold), run in runs.items():
        s, metrics = run.summary(), run.metrics()
        rows.append({"model": model, "fold": fold, "epochs": s["epochs"],
                     "best_epoch": s["best_epoch"], "selection": s["selection"],
                     **{k: round(v, 4) for k, v in s["best"].items()},
                     "train_seconds": round(float(metrics["seconds"].sum()), 1)})
    return pd.DataFrame(rows)


def plot_training_curves(runs: dict, title: str):
    """One row per model: training / validation loss and validation macro-F1 per epoch."""
    import matplotlib.pyplot as plt

    models = sorted({m for m, _ in runs}, key=list(STUDY_MODELS + tuple(m for m, _ in runs)).index)
    fig, axes = plt.subplots(len(models), 2, figsize=(8, 2.1 * len(models)), squeeze=False)
    for i, model in enumerate(models):
        for (m, fold), run in runs.items():
            if m != model:
                continue
            metrics = run.metrics()
            axes[i, 0].plot(metrics.epoch, metrics.train_loss, label=f"train f{fold}")
            axes[i, 0].plot(metrics.epoch, metrics.val_loss, ls="--", label=f"val f{fold}")
            axes[i, 1].plot(metrics.epoch, metrics.val_macro_f1, label=f"fold {fold}")
        axes[i, 0].set_ylabel(model, fontsize=8)
        axes[i, 1].set_ylim(0, 1)
        axes[i, 0].legend(fontsize=6), axes[i, 1].legend(fontsize=6)
    axes[0, 0].set_title("loss (train —, validation --)", fontsize=8)
    axes[0, 1].set_title("validation macro-F1", fontsize=8)
    axes[-1, 0].set_xlabel("epoch"), axes[-1, 1].set_xlabel("epoch")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def evaluate_runs(runs: dict, n_resamples: int | None = None, progress: bool = True) -> None:
    """``gpcore evaluate`` every run not evaluated yet (predictions and tables are cached);
    ``n_resamples`` defaults to the profile's ``explain.n_resamples``."""
    for run in runs.values():
        if not run.is_evaluated():
            evaluate_run(run, n_resamples, progress=progress)


def evaluate_run(run: RunDir, n_resamples: int | None = None, workers: int | None = None,
                 progress: bool = True) -> Path:
    """``gpcore evaluate`` of one run on the CPU; ``n_resamples`` defaults to its profile's
    ``explain.n_resamples``."""
    from ..evaluation.run import evaluate
    from ..explanations.run import ExplainConfig

    run = RunDir(run)
    if n_resamples is None:
        n_resamples = ExplainConfig.from_profile(run.summary()["profile"]).n_resamples
    return evaluate(run.path, n_resamples=n_resamples, workers=workers, progress=progress)


def _folder(run: RunDir, folder: str) -> Path:
    """A run's ``evaluation`` or ``explanations`` folder."""
    if folder not in ("evaluation", "explanations"):
        raise ValueError(f"folder must be 'evaluation' or 'explanations', got {folder!r}")
    return run.evaluation() if folder == "evaluation" else run.explanations


def gather(runs: dict, table: str, folder: str = "evaluation") -> pd.DataFrame:
    """Concatenate ``RUN/<folder>/<table>.csv`` over runs, with ``model`` and ``fold`` first."""
    parts = []
    for (model, fold), run in runs.items():
        df = pd.read_csv(_folder(RunDir(run), folder) / f"{table}.csv",
                         dtype={"patient_id": str})
        df = df.drop(columns=[c for c in ("run",) if c in df.columns])
        df.insert(0, "fold", fold)
        df.insert(0, "model", model)
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def publish_figures(runs: dict, name: str, figures_dir: str | Path, folder: str = "evaluation"
                    ) -> list[Path]:
    """Copy each run's ``<folder>/figures/<name>.{png,pdf}`` to
    ``figures_dir/<model>_fold<k>_<name>.*``; returns the PNG paths."""
    out = []
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    for (model, fold), run in runs.items():
        for ext in ("png", "pdf"):
            src = _folder(RunDir(run), folder) / "figures" / f"{name}.{ext}"
            if src.is_file():
                dst = figures_dir / f"{model}_fold{fold}_{name}.{ext}"
                shutil.copyfile(src, dst)
                if ext == "png":
                    out.append(dst)
    return out


def study_data(work_dir: str | Path, profile: str, study: str | None = None
               ) -> tuple[Path, Path]:
    """The slice store and split written by the data stage (``prepare_study``)."""
    from ..configs import load_profile

    size = (load_profile(profile, study).get("data") or {}).get("slice_size")
    store, split = Path(work_dir) / f"store_{size or 'native'}", Path(work_dir) / "split.csv"
    if not (store / "store.json").is_file() or not split.is_file():
        raise FileNotFoundError(f"{store} or {split} is missing; run the data stage first "
                                f"(./run_all.sh --stage data)")
    return store, split


def plot_offset_grids(grid: pd.DataFrame, title: str):
    """Validation median Dice against the offset, per model (clean-up on / off): the curve the
    frozen test offset was read from."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    if "rule" in grid.columns:  # per model, the map rule (and brain restriction) that won
        best = grid.sort_values("median_dice", ascending=False, kind="stable") \
            .groupby("model", sort=False).head(1)[["model", "rule", "in_brain"]]
        grid = grid.merge(best, on=["model", "rule", "in_brain"])
    for (model, cleanup), part in grid.groupby(["model", "cleanup"], sort=False):
        part = part.sort_values("offset")
        rule = (f" ({part['rule'].iat[0]}{', brain' if part['in_brain'].iat[0] else ''})"
                if "rule" in part.columns else "")
        ax.plot(part.offset, part.median_dice, ls="-" if cleanup else ":",
                label=f"{model}{rule}{' + clean-up' if cleanup else ''}")
    ax.set_xlabel("offset below the upper multi-Otsu threshold")
    ax.set_ylabel("median Dice (validation tumour slices)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6, ncol=2)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig
