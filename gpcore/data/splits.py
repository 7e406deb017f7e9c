"""Patient-level splits (the project's protocol) and the published slice-level split.

A split is a long table written to disk once and read by every later stage:

* ``protocol="patient"``: columns ``fold, patient_id, stratum, part`` - for each outer fold
  ``k``, every patient is in exactly one ``part`` of ``train`` / ``val`` / ``test``. The test
  patients of the folds are disjoint and cover the cohort (K-fold over patients, stratified by
  grade or class; a dataset's own patient-wise folds when it has them). The validation
  patients are carved out of each fold's training patients, by patient, stratified.
* ``protocol="published"``: columns ``fold, row, part`` over *slices*, the reference's
  ``StratifiedShuffleSplit`` scheme (test 25 %, seed 13; then validation 20 %, seed 42). It
  puts slices of one patient in train and test (defect D6) and is labelled "slice-level split
  (leaky)" wherever it is used.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit, train_test_split

from ..io import atomic_path

PARTS = ("train", "val", "test")
LEAKY_LABEL = "slice-level split (leaky)"


def patient_table(index: pd.DataFrame) -> pd.DataFrame:
    """One row per patient: ``patient_id``, ``stratum`` (grade, or class for 2D datasets),
    ``dataset_fold`` (the dataset's own fold, or NA)."""
    def first(series):
        values = series[series.astype(str) != ""]
        return values.iloc[0] if len(values) else pd.NA

    grouped = index.groupby("patient_id", sort=True)
    return pd.DataFrame({"stratum": grouped["grade"].agg(first),
                         "dataset_fold": grouped["fold"].agg(first)}).reset_index()


def _stratified_val(patients: pd.DataFrame, fraction: float, seed: int) -> set[str]:
    if fraction <= 0:
        return set()
    ids, strata = patients["patient_id"].to_numpy(), patients["stratum"].astype(str).to_numpy()
    n_val = max(1, int(round(fraction * len(ids))))
    counts = pd.Series(strata).value_counts()
    stratify = strata if counts.min() >= 2 and n_val >= len(counts) else None
    _, val = train_test_split(ids, test_size=n_val, random_state=seed, stratify=stratify)
    return set(val)


def patient_split(index: pd.DataFrame, n_folds: int = 5, val_fraction: float = 0.2,
                  seed: int = 1701, use_dataset_folds: bool = True) -> pd.DataFrame:
    """Patient-level K-fold split of a store's index (see module docstring).

    ``val_fraction`` is the share of each fold's training patients moved to validation.
    With ``use_dataset_folds`` and a ``fold`` column filled for every patient, the dataset's
    folds are the outer folds (Figshare's official patient-wise folds).
    """
    patients = patient_table(index)
    if use_dataset_folds and patients["dataset_fold"].notna().all():
        folds = sorted(patients["dataset_fold"].astype(int).unique())
        outer = patients["dataset_fold"].astype(int).map({f: i for i, f in enumerate(folds)})
        n_folds = len(folds)
        if n_folds < 2:
            raise ValueError("the dataset provides a single fold; pass use_dataset_folds=False")
    else:
        strata = patients["stratum"].astype(str)
        if strata.value_counts().min() < n_folds:
            raise ValueError(f"too few patients per stratum for {n_folds} folds: "
                             f"{strata.value_counts().to_dict()}; use fewer folds")
        outer = np.empty(len(patients), int)
        skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        for k, (_, test) in enumerate(skf.split(patients, strata)):
            outer[test] = k
    patients = patients.assign(outer=np.asarray(outer))
    rows = []
    for k in range(n_folds):
        test = patients["outer"] == k
        val = _stratified_val(patients[~test], val_fraction, seed + k)
        for pid, stratum, is_test in zip(patients["patient_id"], patients["stratum"], test):
            part = "test" if is_test else ("val" if pid in val else "train")
            rows.append({"fold": k, "patient_id": pid, "stratum": stratum, "part": part})
    return pd.DataFrame(rows)


def published_split(index: pd.DataFrame, n_folds: int = 5) -> pd.DataFrame:
    """The reference's slice-level split (leaky; for comparison only)."""
    rows_all = index["row"].to_numpy()
    labels = index["label"].to_numpy()
    outer = StratifiedShuffleSplit(n_splits=1, test_size=0.25, random_state=13)
    trainval, test = next(outer.split(rows_all, labels))
    inner = StratifiedShuffleSplit(n_splits=n_folds, test_size=0.20, random_state=42)
    out = []
    for k, (train, val) in enumerate(inner.split(rows_all[trainval], labels[trainval])):
        for part, idx in (("train", trainval[train]), ("val", trainval[val]), ("test", test)):
            out.append(pd.DataFrame({"fold": k, "row": rows_all[idx], "part": part}))
    return pd.concat(out, ignore_index=True).sort_values(["fold", "row"], ignore_index=True)


def save_split(split: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a split as CSV (atomically)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        split.to_csv(tmp, index=False)
    return path


def load_split(path: str | os.PathLike) -> pd.DataFrame:
    split = pd.read_csv(path, dtype={"patient_id": str}, keep_default_na=False)
    if not {"fold", "part"} <= set(split.columns) or not ({"patient_id", "row"} & set(split.columns)):
        raise ValueError(f"{path}: not a split table (needs fold, part and patient_id or row)")
    return split


def split_rows(split: pd.DataFrame, index: pd.DataFrame, fold: int, part: str) -> np.ndarray:
    """Store rows of ``part`` (train / val / test) in outer fold ``fold``, sorted."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    chosen = split[(split["fold"] == fold) & (split["part"] == part)]
    if chosen.empty and fold not in set(split["fold"]):
        raise ValueError(f"fold {fold} not in split (folds {sorted(set(split['fold']))})")
    if "row" in split.columns:
        return np.sort(chosen["row"].to_numpy())
    return np.sort(index.loc[index["patient_id"].isin(set(chosen["patient_id"])), "row"].to_numpy())


def is_leaky(split: pd.DataFrame) -> bool:
    """True for slice-level splits (``protocol="published"``)."""
    return "row" in split.columns


def split_record(path: str | os.PathLike, split: pd.DataFrame, fold: int) -> dict:
    """What a run folder's ``config.yaml`` says of its split: path, fold and protocol."""
    return {"path": str(Path(path).resolve()), "fold": int(fold),
            "protocol": "slice-level (leaky)" if is_leaky(split) else "patient-level"}
