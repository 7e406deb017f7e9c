"""The run folder as an object: the one place that spells its layout.

A run folder is what ``gpcore train`` writes and every later stage reads or adds to::

    RUN/
      config.yaml              the run record: training configuration, store, split, classes
      split.csv                the split it was trained on (a copy)
      best.safetensors         the selected epoch's weights (the checkpoint every stage uses)
      last.safetensors         the last epoch's weights
      last.pt                  resume state (optimiser, scheduler, RNG; weights_only loadable)
      metrics.csv              one row per epoch
      curves.png / .pdf        training curves
      prototypes.csv           MProtoNet: where each prototype was pushed
      summary.json             written last by training: the run is finished
      predictions/<part>/      gpcore predict's folder for part val | test
      evaluation/              gpcore evaluate's tables and figures (predicted-class maps)
        offset_choice.json     the map rule, offset and clean-up chosen on validation
      evaluation_true_class/   the same with the true class's map (diagnostic)
      explanations/            gpcore explain: AP, IDS, Captum agreement

A study keeps its runs as ``RUNS/<model>/fold<k>`` (:meth:`RunDir.of`).
"""
from __future__ import annotations

import json
import os
import time
from functools import cached_property
from pathlib import Path

import pandas as pd
import yaml

HEALTHY = "Healthy"


def healthy_index(classes) -> int | None:
    """Index of the Healthy (no tumour) class in ``classes``, None where there is none (e.g.
    Figshare's three tumour types). The one rule: the class named ``Healthy``, any case."""
    for k, name in enumerate(classes or ()):
        if str(name).lower() == HEALTHY.lower():
            return k
    return None


class RunDir(os.PathLike):
    """One run folder (see the module's layout). Paths are properties; reading a file that is
    not there raises FileNotFoundError naming the step that writes it."""

    CONFIG, SPLIT, CHECKPOINT, LAST, RESUME = ("config.yaml", "split.csv", "best.safetensors",
                                               "last.safetensors", "last.pt")
    METRICS, SUMMARY = "metrics.csv", "summary.json"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # --- the layout ---------------------------------------------------------------------
    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    def __eq__(self, other) -> bool:
        return isinstance(other, RunDir) and self.path == other.path

    def __hash__(self) -> int:
        return hash(self.path)

    @classmethod
    def of(cls, runs_dir: str | os.PathLike, model: str, fold: int) -> "RunDir":
        """A study's run of ``model`` on ``fold``: ``RUNS/<model>/fold<k>``."""
        return cls(Path(runs_dir) / model / f"fold{fold}")

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_file(self) -> Path:
        return self.path / self.CONFIG

    @property
    def split_file(self) -> Path:
        return self.path / self.SPLIT

    @property
    def checkpoint(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def last_checkpoint(self) -> Path:
        return self.path / self.LAST

    @property
    def resume_state(self) -> Path:
        return self.path / self.RESUME

    @property
    def metrics_file(self) -> Path:
        return self.path / self.METRICS

    @property
    def summary_file(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def curves(self) -> Path:
        """Stem of the training-curve figure (``.png`` and ``.pdf``)."""
        return self.path / "curves"

    @property
    def prototypes_file(self) -> Path:
        return self.path / "prototypes.csv"

    def predictions(self, part: str) -> Path:
        """``predictions/<part>`` (val | test): :func:`gpcore.inference.predict.predict_store`'s
        folder."""
        return self.path / "predictions" / part

    def evaluation(self, channel: str = "predicted") -> Path:
        """``evaluation/`` for the predicted class's maps (published), else
        ``evaluation_<channel>_class/``."""
        return self.path / ("evaluation" if channel == "predicted"
                            else f"evaluation_{channel}_class")

    def offset_choice_file(self, channel: str = "predicted") -> Path:
        return self.evaluation(channel) / "offset_choice.json"

    @property
    def explanations(self) -> Path:
        return self.path / "explanations"

    # --- state --------------------------------------------------------------------------
    @property
    def has_checkpoint(self) -> bool:
        return self.checkpoint.is_file() and self.config_file.is_file()

    @property
    def is_trained(self) -> bool:
        """Training finished (summary.json is written last)."""
        return self.summary_file.is_file() and self.checkpoint.is_file()

    def is_evaluated(self, channel: str = "predicted") -> bool:
        return self.offset_choice_file(channel).is_file()

    # --- contents -----------------------------------------------------------------------
    def _need(self, path: Path, step: str) -> Path:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; {step}")
        return path

    @cached_property
    def record(self) -> dict:
        """``config.yaml``: ``config`` (training settings), ``store``, ``split``, ``classes``."""
        path = self._need(self.config_file, "train the run first (gpcore train)")
        return yaml.safe_load(path.read_text()) or {}

    @property
    def config(self) -> dict:
        return self.record["config"]

    @property
    def model_name(self) -> str:
        return self.config["model"]["name"]

    @property
    def profile(self) -> str:
        return self.config["profile"]

    @property
    def fold(self) -> int:
        return int(self.record["split"]["fold"])

    @property
    def store_path(self) -> Path:
        return Path(self.record["store"]["path"])

    @property
    def classes(self) -> list[str]:
        return list(self.record["classes"])

    @property
    def healthy(self) -> int | None:
        return healthy_index(self.classes)

    def summary(self) -> dict:
        return json.loads(self._need(self.summary_file, "train the run first").read_text())

    def metrics(self) -> pd.DataFrame:
        return pd.read_csv(self._need(self.metrics_file, "train the run first"))

    def offset_choice(self, channel: str = "predicted") -> dict:
        path = self._need(self.offset_choice_file(channel),
                          f"evaluate the run first (gpcore evaluate {self.path})")
        return json.loads(path.read_text())

    def evaluation_table(self, name: str, channel: str = "predicted") -> pd.DataFrame:
        """``evaluation/<name>.csv`` (e.g. segmentation_slices, classification_summary)."""
        path = self._need(self.evaluation(channel) / f"{name}.csv",
                          f"evaluate the run first (gpcore evaluate {self.path})")
        return pd.read_csv(path, dtype={"patient_id": str})

    def set_aside(self) -> "RunDir":
        """Rename the folder to ``<name>.stale-<time>`` (nothing is deleted); returns it."""
        stale = self.path.with_name(f"{self.path.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
        self.path.rename(stale)
        return RunDir(stale)


def find_runs(runs_dir: str | os.PathLike, models, folds) -> dict[tuple[str, int], RunDir]:
    """The finished runs ``{(model, fold): RunDir}`` of a study's ``RUNS`` folder; a missing
    one raises with the fix."""
    runs = {}
    for model in models:
        for fold in folds:
            run = RunDir.of(runs_dir, model, fold)
            if not run.is_trained:
                raise FileNotFoundError(f"{run}: no finished training run; run the training "
                                        f"stage first (./run_all.sh --stage training)")
            runs[(model, fold)] = run
    return runs
