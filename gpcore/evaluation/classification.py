"""Slice- and patient-level classification metrics, curves, figures and the report writer.

Spec: ``docs/spec/evaluation.md`` (Classification, Reporting); confusion matrices follow defect D13 of
``docs/spec/gp-models.md`` §8: **rows = true class, columns = predicted class**.

Vocabulary (as in ``gpcore.inference.predict`` prediction folders):

* ``y_true``  (N,) int class codes ``0..K-1`` (class-name strings from ``classes`` also accepted)
* ``prob``    (N, K) float, softmax probabilities (``probabilities.npy``); the prediction of a
  slice is ``argmax(prob, axis=1)`` (the ``pred`` column of ``index.csv``)
* ``classes`` sequence of K class names, e.g. ``("Healthy", "LGG", "HGG")``
* ``patient_ids`` (N,) the subject of each slice (``index.csv`` ``patient_id``)

Absent classes. A class with no true slice (support 0) gets ``nan`` recall / F1 / ROC AUC /
AP in the per-class table (its precision is still defined if it was predicted). Macro
precision / recall / F1 and balanced accuracy average over the classes **present in
``y_true``** (as ``sklearn.metrics.balanced_accuracy_score`` does); a present class that is
never predicted counts with precision 0. Macro ROC AUC and macro AP average over the classes
whose one-vs-rest problem has both positives and negatives; ``n_classes_scored`` says how
many that was (``nan`` if none). Nothing raises for an absent class.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import (accuracy_score, average_precision_score, confusion_matrix,
                             precision_recall_curve, precision_recall_fscore_support,
                             roc_auc_score, roc_curve)

from ..inference.patient import patient_class
from ..io import save_figure, write_table

__all__ = ["slice_metrics", "tumour_only_grade_accuracy", "patient_grade", "patient_grade_auc",
           "curves", "plot_roc_pr", "plot_confusion", "summarise_folds", "pooled_metrics",
           "write_classification_report"]


def _inputs(y_true, prob, classes) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Validate and return ``y`` (N,) int codes, ``prob`` (N, K) float, class names (K,)."""
    classes = [str(c) for c in classes]
    prob = np.asarray(prob, dtype=float)
    if prob.ndim != 2 or prob.shape[1] != len(classes):
        raise ValueError(f"prob must be (N, {len(classes)}), got {prob.shape}")
    y = np.asarray(y_true)
    if y.dtype.kind in "OUS":
        lookup = {c: i for i, c in enumerate(classes)}
        unknown = set(y.tolist()) - set(lookup)
        if unknown:
            raise ValueError(f"unknown labels {sorted(unknown)}; classes are {classes}")
        y = np.array([lookup[v] for v in y.tolist()], dtype=int)
    y = y.astype(int).reshape(-1)
    if y.shape[0] != prob.shape[0]:
        raise ValueError(f"y_true has {y.shape[0]} rows, prob has {prob.shape[0]}")
    if y.size and (y.min() < 0 or y.max() >= len(classes)):
        raise ValueError(f"class codes must lie in 0..{len(classes) - 1}")
    return y, prob, classes


def _ovr_scores(y: np.ndarray, prob: np.ndarray, k: int) -> tuple[float, float]:
    """One-vs-rest ROC AUC and average precision of class ``k``; nan if undefined."""
    pos = y == k
    if pos.all() or not pos.any():
        return float("nan"), float("nan")
    return (float(roc_auc_score(pos, prob[:, k])),
            float(average_precision_score(pos, prob[:, k])))


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def slice_metrics(y_true, prob, classes: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Per-slice metrics of a K-class classifier.

    y_true (N,), prob (N, K), classes (K,). Returns

    * ``"summary"``   one row: n_slices, n_classes_present, accuracy, balanced_accuracy,
      precision_macro, recall_macro, f1_macro, roc_auc_macro (one-vs-rest),
      average_precision_macro, n_classes_scored (see the module docstring for absent classes)
    * ``"per_class"`` K rows: class, support, n_predicted, precision, recall, f1, roc_auc,
      average_precision
    * ``"confusion"`` (K, K) counts, index = true class (name ``"true"``), columns = predicted
      class (name ``"predicted"``)
    """
    y, prob, classes = _inputs(y_true, prob, classes)
    K = len(classes)
    pred = prob.argmax(axis=1)
    labels = np.arange(K)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=labels, average=None, zero_division=0)
    present = support > 0
    n_pred = np.bincount(pred, minlength=K)
    precision = np.where(present | (n_pred > 0), precision, np.nan)
    recall = np.where(present, recall, np.nan)
    f1 = np.where(present, f1, np.nan)
    auc, ap = zip(*(_ovr_scores(y, prob, k) for k in range(K))) if K else ((), ())
    auc, ap = np.array(auc, dtype=float), np.array(ap, dtype=float)

    per_class = pd.DataFrame({"class": classes, "support": support.astype(int),
                              "n_predicted": n_pred.astype(int), "precision": precision,
                              "recall": recall, "f1": f1, "roc_auc": auc,
                              "average_precision": ap})
    summary = pd.DataFrame([{
        "n_slices": int(y.size),
        "n_classes_present": int(present.sum()),
        "accuracy": float(accuracy_score(y, pred)) if y.size else float("nan"),
        # mean recall over present classes == sklearn's balanced_accuracy_score
        "balanced_accuracy": _nanmean(recall[present]),
        "precision_macro": _nanmean(precision[present]),
        "recall_macro": _nanmean(recall[present]),
        "f1_macro": _nanmean(f1[present]),
        "roc_auc_macro": _nanmean(auc),
        "average_precision_macro": _nanmean(ap),
        "n_classes_scored": int((~np.isnan(auc)).sum()),
    }])
    confusion = pd.DataFrame(confusion_matrix(y, pred, labels=labels),
                             index=pd.Index(classes, name="true"),
                             columns=pd.Index(classes, name="predicted"))
    return {"summary": summary, "per_class": per_class, "confusion": confusion}


def _split_classes(classes: list[str], healthy: str) -> tuple[int, np.ndarray]:
    if healthy not in classes:
        raise ValueError(f"healthy class {healthy!r} not in {classes}")
    h = classes.index(healthy)
    return h, np.array([k for k in range(len(classes)) if k != h])


def tumour_only_grade_accuracy(y_true, prob, classes: Sequence[str],
                               healthy: str = "Healthy") -> dict:
    """Grade accuracy on the tumour slices (true label ≠ ``healthy``): the paper's 98.7 % figure.

    Rule: on the slices whose **true** label is not ``healthy``, the predicted grade is the
    argmax over the non-Healthy columns of ``prob`` only (LGG vs HGG; P(Healthy) is ignored,
    so a slice predicted Healthy still receives a grade). ``three_class_accuracy`` is the plain
    K-class argmax accuracy on the same slices (a slice predicted Healthy counts as wrong).

    y_true (N,), prob (N, K). Returns ``{"n_slices", "grade_accuracy", "three_class_accuracy",
    "n_predicted_healthy"}``; accuracies are nan when there is no tumour slice.
    """
    y, prob, classes = _inputs(y_true, prob, classes)
    if healthy not in classes:  # e.g. Figshare: every slice holds a tumour, all classes grade
        full = prob.argmax(axis=1)
        acc = float((full == y).mean()) if len(y) else float("nan")
        return {"n_slices": int(len(y)), "grade_accuracy": acc, "three_class_accuracy": acc,
                "n_predicted_healthy": 0}
    h, tumour_cols = _split_classes(classes, healthy)
    sel = y != h
    n = int(sel.sum())
    if n == 0:
        return {"n_slices": 0, "grade_accuracy": float("nan"),
                "three_class_accuracy": float("nan"), "n_predicted_healthy": 0}
    grade = tumour_cols[prob[sel][:, tumour_cols].argmax(axis=1)]
    full = prob[sel].argmax(axis=1)
    return {"n_slices": n,
            "grade_accuracy": float((grade == y[sel]).mean()),
            "three_class_accuracy": float((full == y[sel]).mean()),
            "n_predicted_healthy": int((full == h).sum())}


def patient_grade(y_true, prob, patient_ids, classes: Sequence[str], healthy: str = "Healthy",
                  low: str = "LGG", high: str = "HGG") -> pd.DataFrame:
    """Per-patient grade from aggregated slice probabilities, by the rule ``gpcore segment``
    outputs (:func:`gpcore.inference.patient.patient_class`).

    That is: a slice's high-grade share is ``s = P(high) / (P(low) + P(high))`` (0.5 where
    both are 0). The patient's score is the mean of ``s`` over its slices **predicted as
    tumour** (argmax ≠ ``healthy``), or over all its slices if none is. Predicted grade =
    ``high`` if score ≥ 0.5, else ``low``. The true grade is the non-Healthy label present
    among the patient's slices (more than one raises ``ValueError``); patients with only
    Healthy slices are excluded, and counted in ``table.attrs["n_healthy_only"]`` (their IDs in
    ``table.attrs["healthy_only"]``).

    y_true (N,), prob (N, K), patient_ids (N,). Returns one row per patient, sorted by ID:
    patient_id, true_grade, pred_grade, score (the mean high-grade share), n_slices,
    n_slices_used, aggregated_over ("predicted tumour" | "all slices").
    """
    y, prob, classes = _inputs(y_true, prob, classes)
    h, _ = _split_classes(classes, healthy)
    lo, hi = classes.index(low), classes.index(high)
    pids = np.asarray(patient_ids).reshape(-1)
    if pids.shape[0] != y.shape[0]:
        raise ValueError(f"patient_ids has {pids.shape[0]} rows, y_true has {y.shape[0]}")
    rows, healthy_only = [], []
    for pid in sorted(set(pids.tolist()), key=str):
        idx = np.flatnonzero(pids == pid)
        grades = sorted({int(v) for v in y[idx]} - {h})
        if not grades:
            healthy_only.append(pid)
            continue
        if len(grades) > 1:
            raise ValueError(f"patient {pid!r} has several grades: {[classes[g] for g in grades]}")
        pc = patient_class(prob[idx][:, [h, lo, hi]], [healthy, low, high], 0)
        rows.append({"patient_id": pid, "true_grade": classes[grades[0]],
                     "pred_grade": pc.tumour_class, "score": pc.shares[high],
                     "n_slices": int(idx.size), "n_slices_used": pc.n_slices_used,
                     "aggregated_over": pc.aggregated_over})
    table = pd.DataFrame(rows, columns=["patient_id", "true_grade", "pred_grade", "score",
                                        "n_slices", "n_slices_used", "aggregated_over"])
    table.attrs["n_healthy_only"] = len(healthy_only)
    table.attrs["healthy_only"] = healthy_only
    table.attrs["high"] = high
    return table


def patient_grade_auc(table: pd.DataFrame, high: str | None = None) -> float:
    """ROC AUC of ``high`` (HGG) vs the other grade from ``patient_grade``'s ``score``.

    nan if the table holds fewer than two grades (or no patient).
    """
    high = high or table.attrs.get("high", "HGG")
    pos = (table["true_grade"] == high).to_numpy()
    if pos.all() or not pos.any():
        return float("nan")
    return float(roc_auc_score(pos, table["score"].to_numpy(dtype=float)))


def curves(y_true, prob, classes: Sequence[str]) -> dict[str, dict]:
    """One-vs-rest ROC and precision-recall curves per class.

    y_true (N,), prob (N, K). Returns ``{class: {"fpr", "tpr", "roc_auc", "precision",
    "recall", "average_precision", "prevalence", "n_positive"}}`` (curves are 1-D arrays from
    ``sklearn.metrics.roc_curve`` / ``precision_recall_curve``). A class with no positive or
    no negative slice gets empty arrays and nan scores.
    """
    y, prob, classes = _inputs(y_true, prob, classes)
    out = {}
    for k, name in enumerate(classes):
        pos = y == k
        entry = {"prevalence": float(pos.mean()) if y.size else float("nan"),
                 "n_positive": int(pos.sum())}
        if pos.all() or not pos.any():
            empty = np.empty(0)
            entry.update(fpr=empty, tpr=empty, roc_auc=float("nan"), precision=empty,
                         recall=empty, average_precision=float("nan"))
        else:
            fpr, tpr, _ = roc_curve(pos, prob[:, k])
            precision, recall, _ = precision_recall_curve(pos, prob[:, k])
            entry.update(fpr=fpr, tpr=tpr, roc_auc=float(roc_auc_score(pos, prob[:, k])),
                         precision=precision, recall=recall,
                         average_precision=float(average_precision_score(pos, prob[:, k])))
        out[name] = entry
    return out


def plot_roc_pr(curve_set: dict[str, dict], title: str) -> Figure:
    """Two panels: ROC (chance = diagonal) and PR (chance = class prevalence), a line per class."""
    fig = Figure(figsize=(10, 4.5))
    ax_roc, ax_pr = fig.subplots(1, 2)
    ax_roc.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    for i, (name, c) in enumerate(curve_set.items()):
        colour = f"C{i}"
        if c["fpr"].size:
            ax_roc.plot(c["fpr"], c["tpr"], color=colour, label=f"{name} (AUC {c['roc_auc']:.3f})")
            ax_pr.step(c["recall"], c["precision"], where="post", color=colour,
                       label=f"{name} (AP {c['average_precision']:.3f})")
        else:
            ax_roc.plot([], [], color=colour, label=f"{name} (undefined)")
        if np.isfinite(c["prevalence"]):
            ax_pr.axhline(c["prevalence"], ls=":", color=colour, lw=1,
                          label=f"{name} chance ({c['prevalence']:.2f})")
    ax_roc.set(xlabel="false-positive rate", ylabel="true-positive rate",
               title="ROC (one-vs-rest)", xlim=(0, 1), ylim=(0, 1.02))
    ax_pr.set(xlabel="recall", ylabel="precision", title="Precision-recall (one-vs-rest)",
              xlim=(0, 1), ylim=(0, 1.02))
    ax_roc.legend(loc="lower right", fontsize=8)
    ax_pr.legend(loc="lower left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion(confusion: pd.DataFrame, title: str, normalise: bool = True) -> Figure:
    """Confusion matrix (rows = true, columns = predicted), cells annotated with the count and
    the row-normalised percentage; colour = row share if ``normalise`` else counts."""
    counts = confusion.to_numpy(dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.full_like(counts, np.nan), where=rows > 0)
    fig = Figure(figsize=(1.3 * counts.shape[1] + 2.5, 1.1 * counts.shape[0] + 1.8))
    ax = fig.subplots()
    shown = np.nan_to_num(share) if normalise else counts
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalise else max(counts.max(), 1))
    fig.colorbar(im, ax=ax, label="share of true class" if normalise else "slices")
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            pct = "–" if np.isnan(share[i, j]) else f"{100 * share[i, j]:.1f} %"
            dark = shown[i, j] > 0.6 * (1 if normalise else max(counts.max(), 1))
            ax.text(j, i, f"{int(counts[i, j])}\n{pct}", ha="center", va="center",
                    fontsize=9, color="white" if dark else "black")
    ax.set_xticks(range(counts.shape[1]), [str(c) for c in confusion.columns])
    ax.set_yticks(range(counts.shape[0]), [str(c) for c in confusion.index])
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    fig.tight_layout()
    return fig


def summarise_folds(per_fold: Sequence[pd.DataFrame],
                    pooled: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean ± std (sample, ddof=1; nan for one fold) over folds of each summary metric.

    ``per_fold``: ``slice_metrics(...)["summary"]`` rows, each with a ``"fold"`` column.
    ``pooled``: optionally the summary of the pooled out-of-fold predictions
    (``pooled_metrics(...)["summary"]``), added as column ``pooled``. Returns one row per
    metric: metric, mean, std, n_folds, mean_pm_std (text) [, pooled]; nan fold values are
    skipped (``n_folds`` counts the finite ones).
    """
    table = pd.concat(list(per_fold), ignore_index=True)
    if "fold" not in table.columns:
        raise ValueError("every per-fold summary needs a 'fold' column")
    metrics = [c for c in table.columns
               if c != "fold" and pd.api.types.is_numeric_dtype(table[c])]
    rows = []
    for m in metrics:
        v = table[m].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        mean = float(v.mean()) if v.size else float("nan")
        std = float(v.std(ddof=1)) if v.size > 1 else float("nan")
        row = {"metric": m, "mean": mean, "std": std, "n_folds": int(v.size),
               "mean_pm_std": f"{mean:.4g} ± {std:.2g}"}
        if pooled is not None:
            row["pooled"] = float(pooled[m].iloc[0]) if m in pooled.columns else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def pooled_metrics(y_true_folds: Sequence, prob_folds: Sequence,
                   classes: Sequence[str]) -> dict:
    """Pooled out-of-fold evaluation: ``slice_metrics`` and ``curves`` of the concatenated
    folds (each fold's y_true (N_f,), prob (N_f, K)); adds key ``"curves"``."""
    y = np.concatenate([np.asarray(v).reshape(-1) for v in y_true_folds])
    prob = np.concatenate([np.asarray(p, dtype=float) for p in prob_folds], axis=0)
    out = dict(slice_metrics(y, prob, classes))
    out["curves"] = curves(y, prob, classes)
    return out


def write_classification_report(y_true, prob, classes: Sequence[str], patient_ids,
                                out_dir: str | os.PathLike, figures_dir: str | os.PathLike,
                                label: str, healthy: str = "Healthy") -> list[Path]:
    """Write the classification tables (CSV + Markdown) and figures (PNG + PDF).

    Tables under ``out_dir``: classification_summary, classification_per_class,
    confusion_matrix (first column ``true``, then one column per predicted class),
    tumour_only_grade (slice grade accuracy plus patient counts, patient accuracy and AUC),
    patient_grade. Figures under ``figures_dir``: roc_pr, confusion_matrix. Every table has a
    first column ``run`` = ``label`` and every figure title contains ``label`` (e.g.
    "synthetic phantom, patient-level split, profile quick, fold 0"). Returns all paths.
    """
    out_dir, figures_dir = Path(out_dir), Path(figures_dir)
    y, prob, classes = _inputs(y_true, prob, classes)
    m = slice_metrics(y, prob, classes)
    tumour = tumour_only_grade_accuracy(y, prob, classes, healthy=healthy)
    grades = [c for c in classes if c != healthy]
    if len(grades) == 2:
        low, high = ("LGG", "HGG") if set(grades) == {"LGG", "HGG"} else grades
        ptable = patient_grade(y, prob, patient_ids, classes, healthy=healthy,
                               low=low, high=high)
        tumour.update(n_patients=len(ptable),
                      n_patients_healthy_only=ptable.attrs["n_healthy_only"],
                      patient_grade_accuracy=(float((ptable["true_grade"] ==
                                                     ptable["pred_grade"]).mean())
                                              if len(ptable) else float("nan")),
                      patient_grade_auc=patient_grade_auc(ptable, high=high))
    elif healthy not in classes:  # tumour types (Figshare): patient class from mean probability
        frame = pd.DataFrame(prob, columns=classes).assign(patient_id=np.asarray(patient_ids), y=y)
        rows = []
        for pid, part in frame.groupby("patient_id", sort=False):
            pc = patient_class(part[classes].to_numpy(), classes, None)
            rows.append({"patient_id": pid, "true_grade": classes[int(part.y.mode().iloc[0])],
                         "pred_grade": pc.tumour_class, "score": max(pc.shares.values()),
                         "n_slices": len(part)})
        ptable = pd.DataFrame(rows)
        tumour.update(n_patients=len(ptable), patient_accuracy=float(
            (ptable["true_grade"] == ptable["pred_grade"]).mean()) if len(ptable) else np.nan)
    else:  # no LGG/HGG pair to grade per patient
        ptable = pd.DataFrame(columns=["patient_id", "true_grade", "pred_grade", "score"])

    def tagged(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df.insert(0, "run", label)
        return df

    confusion = m["confusion"].copy()
    confusion.columns = [f"pred {c}" for c in confusion.columns]
    confusion = confusion.reset_index()
    paths: list[Path] = []
    paths += write_table(tagged(m["summary"]), out_dir / "classification_summary")
    paths += write_table(tagged(m["per_class"]), out_dir / "classification_per_class")
    paths += write_table(tagged(confusion), out_dir / "confusion_matrix")
    paths += write_table(tagged(pd.DataFrame([tumour])), out_dir / "tumour_only_grade")
    paths += write_table(tagged(ptable), out_dir / "patient_grade")
    paths += save_figure(plot_roc_pr(curves(y, prob, classes),
                                     f"Slice classification, one-vs-rest — {label}"),
                         figures_dir / "roc_pr")
    paths += save_figure(plot_confusion(m["confusion"], f"Confusion matrix — {label}"),
                         figures_dir / "confusion_matrix")
    return paths
