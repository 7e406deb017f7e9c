"""One patient-class rule (gpcore.inference.patient): the grade the evaluation scores is the
class ``gpcore segment`` writes."""
import numpy as np
import pandas as pd
import pytest

from gpcore.evaluation.classification import patient_grade, write_classification_report
from gpcore.inference.patient import patient_class

CLASSES = ["Healthy", "LGG", "HGG"]


def _patients(rng, n_patients=12, n_slices=9):
    probs = rng.dirichlet(np.ones(3) * 0.7, size=n_patients * n_slices)
    pids = np.repeat([f"P{i:02d}" for i in range(n_patients)], n_slices)
    grade = np.repeat(rng.integers(1, 3, n_patients), n_slices)
    y = np.where(rng.random(len(pids)) < 0.5, 0, grade)
    return y, probs, pids


def test_evaluated_grade_is_the_segment_rule():
    y, probs, pids = _patients(np.random.default_rng(0))
    table = patient_grade(y, probs, pids, CLASSES).set_index("patient_id")
    assert len(table) > 5
    for pid, row in table.iterrows():
        pc = patient_class(probs[pids == pid], CLASSES, 0)
        assert row["pred_grade"] == pc.tumour_class
        assert row["score"] == pytest.approx(pc.shares["HGG"])
        assert row["n_slices_used"] == pc.n_slices_used
        assert row["aggregated_over"] == pc.aggregated_over


def test_no_slice_predicted_tumour_is_healthy_with_a_grade_from_all_slices():
    probs = np.array([[0.8, 0.05, 0.15], [0.6, 0.1, 0.3]])
    pc = patient_class(probs, CLASSES, 0)
    assert pc.name == "Healthy" and pc.aggregated_over == "all slices"
    shares = probs[:, 1:] / probs[:, 1:].sum(1, keepdims=True)
    assert pc.tumour_class == "HGG" and pc.shares["HGG"] == pytest.approx(shares[:, 1].mean())


def test_without_a_healthy_class_the_mean_probability_decides(tmp_path):
    classes = ["glioma", "meningioma", "pituitary"]
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), size=40)
    pids = np.repeat([f"F{i}" for i in range(8)], 5)
    y = np.repeat(rng.integers(0, 3, 8), 5)
    for pid in np.unique(pids):
        part = probs[pids == pid]
        assert patient_class(part, classes, None).name == classes[int(part.mean(0).argmax())]
    write_classification_report(y, probs, classes, pids, tmp_path, tmp_path / "f", "test")
    table = pd.read_csv(tmp_path / "patient_grade.csv")
    for _, row in table.iterrows():
        part = probs[pids == row["patient_id"]]
        assert row["pred_grade"] == patient_class(part, classes, None).name
