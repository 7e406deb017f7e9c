"""Per-epoch classification metrics for model selection (scikit-learn)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    """Accuracy, balanced accuracy and macro-F1 over all ``n_classes`` (absent classes count
    with F1 0 only if predicted; ``zero_division=0``)."""
    labels = list(range(n_classes))
    present = [c for c in labels if (y_true == c).any()]
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro",
                                       zero_division=0))}


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``w_c = N / (K n_c)`` (scikit-learn's "balanced"); a class absent from training gets 0."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    weights = np.zeros(n_classes)
    present = counts > 0
    weights[present] = len(labels) / (n_classes * counts[present])
    return weights
