"""The patient's class from its slices: the one rule that ``gpcore segment`` outputs and that
the evaluation scores (patient grade accuracy and AUC).

Rule: a slice's tumour-class shares are its probabilities of the tumour classes (all classes
but Healthy) renormalised to sum to 1 (uniform where they are all 0). They are averaged over
the patient's slices **predicted as tumour** (argmax ≠ Healthy), or over all its slices when
none is (or when there is no Healthy class, e.g. Figshare's tumour types). The patient's tumour
class is the one with the largest mean share (with two, e.g. LGG / HGG: the second when its
mean share is ≥ 0.5). ``gpcore segment`` reports a patient with no slice predicted as tumour as
Healthy; the evaluation grades only patients with a tumour, so it uses the tumour class.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RULE = ("tumour class = largest mean of the tumour-class probabilities renormalised per slice, "
        "over the slices predicted as tumour (all slices when none is); no slice predicted as "
        "tumour -> Healthy")


@dataclass(frozen=True)
class PatientClass:
    name: str                 # the patient's class: Healthy when no slice is predicted tumour
    tumour_class: str         # the tumour class (given even when ``name`` is Healthy)
    shares: dict[str, float]  # mean share of each tumour class over the slices used
    n_slices_used: int
    aggregated_over: str      # "predicted tumour" | "all slices"


def patient_class(probs: np.ndarray, classes, healthy: int | None) -> PatientClass:
    """``probs (S, K)`` slice probabilities of one patient -> its :class:`PatientClass`.

    ``healthy``: index of the Healthy class (:func:`gpcore.rundir.healthy_index`), or None."""
    probs = np.asarray(probs, dtype=np.float64).reshape(len(probs), -1)
    if not len(probs):
        raise ValueError("a patient needs at least one slice")
    classes = list(classes)
    tumour_cols = [k for k in range(probs.shape[1]) if k != healthy]
    used = probs.argmax(axis=1) != healthy if healthy is not None else np.ones(len(probs), bool)
    found = bool(used.any())
    if not found:
        used = np.ones(len(probs), bool)
    p = probs[used][:, tumour_cols]
    denom = p.sum(axis=1, keepdims=True)
    share = np.divide(p, denom, out=np.full_like(p, 1.0 / len(tumour_cols)), where=denom > 0)
    mean = share.mean(axis=0)
    if len(tumour_cols) == 2:
        best = 1 if mean[1] >= 0.5 else 0
    else:
        best = int(np.argmax(mean))
    tumour = classes[tumour_cols[best]]
    name = tumour if found or healthy is None else classes[healthy]
    return PatientClass(name, tumour, {classes[k]: float(m) for k, m in zip(tumour_cols, mean)},
                        int(used.sum()), "predicted tumour" if found and healthy is not None
                        else "all slices")
