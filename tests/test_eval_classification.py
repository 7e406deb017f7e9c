"""Classification metrics, grade rules, curves and the report writer (gpcore.evaluation.classification)."""
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from gpcore.evaluation.classification import (curves, patient_grade, patient_grade_auc,
                                              plot_confusion, plot_roc_pr, pooled_metrics,
                                              slice_metrics, summarise_folds,
                                              tumour_only_grade_accuracy,
                                              write_classification_report)

CLASSES = ("Healthy", "LGG", "HGG")

# Tiny hand-made example: argmax = [0, 0, 1, 1, 2, 0]
Y = np.array([0, 0, 0, 1, 2, 2])
P = np.array([[0.7, 0.2, 0.1],
              [0.6, 0.3, 0.1],
              [0.3, 0.5, 0.2],
              [0.2, 0.6, 0.2],
              [0.1, 0.2, 0.7],
              [0.5, 0.1, 0.4]])


def test_hand_computed_metrics():
    m = slice_metrics(Y, P, CLASSES)
    s = m["summary"].iloc[0]
    assert s["accuracy"] == pytest.approx(4 / 6)
    # recalls 2/3, 1, 1/2; precisions 2/3, 1/2, 1; F1 2/3 each
    assert s["balanced_accuracy"] == pytest.approx(13 / 18)
    assert s["recall_macro"] == pytest.approx(13 / 18)
    assert s["precision_macro"] == pytest.approx(13 / 18)
    assert s["f1_macro"] == pytest.approx(2 / 3)
    # AUC: Healthy 8/9, LGG 1, HGG 1; AP: Healthy (1 + 1 + 3/4) / 3 = 11/12, others 1
    assert s["roc_auc_macro"] == pytest.approx(26 / 27)
    assert s["average_precision_macro"] == pytest.approx(35 / 36)
    pc = m["per_class"].set_index("class")
    assert pc.loc["Healthy", "roc_auc"] == pytest.approx(8 / 9)
    assert pc.loc["Healthy", "average_precision"] == pytest.approx(11 / 12)
    assert pc.loc["LGG", "precision"] == pytest.approx(0.5)
    assert pc.loc["HGG", "recall"] == pytest.approx(0.5)
    assert list(pc["support"]) == [3, 1, 2]
    assert m["confusion"].to_numpy().tolist() == [[2, 1, 0], [0, 1, 0], [1, 0, 1]]


def test_perfect_predictions_score_one():
    y = np.array([0, 1, 2, 0, 1, 2])
    prob = np.eye(3)[y] * 0.8 + 0.2 / 3
    m = slice_metrics(y, prob, CLASSES)
    s = m["summary"].iloc[0]
    for col in ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro",
                "roc_auc_macro", "average_precision_macro"):
        assert s[col] == pytest.approx(1.0), col
    assert np.allclose(m["per_class"][["precision", "recall", "f1", "roc_auc",
                                       "average_precision"]].to_numpy(), 1.0)
    t = tumour_only_grade_accuracy(y, prob, CLASSES)
    assert t["grade_accuracy"] == 1.0 and t["three_class_accuracy"] == 1.0


def test_confusion_rows_are_true_class():
    # three true Healthy all predicted HGG; one true LGG predicted LGG
    y = np.array([0, 0, 0, 1])
    prob = np.array([[0.1, 0.1, 0.8]] * 3 + [[0.1, 0.8, 0.1]])
    cm = slice_metrics(y, prob, CLASSES)["confusion"]
    assert cm.index.name == "true" and cm.columns.name == "predicted"
    assert cm.loc["Healthy", "HGG"] == 3
    assert cm.loc["HGG", "Healthy"] == 0
    assert cm.loc["LGG", "LGG"] == 1
    assert list(cm.index) == list(CLASSES) == list(cm.columns)


def test_absent_class_does_not_crash():
    y = np.array([0, 0, 2, 2])  # no LGG slice
    prob = np.array([[0.8, 0.1, 0.1], [0.4, 0.5, 0.1], [0.1, 0.2, 0.7], [0.2, 0.1, 0.7]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no sklearn warnings either
        m = slice_metrics(y, prob, CLASSES)
        c = curves(y, prob, CLASSES)
    pc = m["per_class"].set_index("class")
    assert math.isnan(pc.loc["LGG", "recall"]) and math.isnan(pc.loc["LGG", "roc_auc"])
    assert pc.loc["LGG", "precision"] == 0.0  # predicted once, wrongly
    s = m["summary"].iloc[0]
    assert s["n_classes_present"] == 2 and s["n_classes_scored"] == 2
    assert s["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert s["roc_auc_macro"] == pytest.approx(1.0)
    assert c["LGG"]["fpr"].size == 0 and math.isnan(c["LGG"]["roc_auc"])
    plot_roc_pr(c, "absent")  # plotting an undefined class does not fail
    # only one class at all: every AUC undefined, still no crash
    one = slice_metrics(np.zeros(3, int), np.tile([0.9, 0.05, 0.05], (3, 1)), CLASSES)
    assert math.isnan(one["summary"].iloc[0]["roc_auc_macro"])


def test_string_labels_accepted():
    names = np.array(CLASSES)[Y]
    a = slice_metrics(names, P, CLASSES)["summary"]
    b = slice_metrics(Y, P, CLASSES)["summary"]
    pd.testing.assert_frame_equal(a, b)


def test_tumour_only_grade_accuracy_hand_case():
    # tumour slices: idx 3 (LGG, pred LGG), 4 (HGG, pred HGG), 5 (HGG, pred Healthy but
    # P(HGG)=0.4 > P(LGG)=0.1 -> grade HGG)
    t = tumour_only_grade_accuracy(Y, P, CLASSES)
    assert t["n_slices"] == 3
    assert t["grade_accuracy"] == pytest.approx(1.0)
    assert t["three_class_accuracy"] == pytest.approx(2 / 3)
    assert t["n_predicted_healthy"] == 1
    # grade error: LGG slice with P(HGG) > P(LGG)
    t2 = tumour_only_grade_accuracy([1, 2], [[0.1, 0.3, 0.6], [0.2, 0.1, 0.7]], CLASSES)
    assert t2["grade_accuracy"] == pytest.approx(0.5)
    none = tumour_only_grade_accuracy([0, 0], [[0.9, 0.05, 0.05]] * 2, CLASSES)
    assert none["n_slices"] == 0 and math.isnan(none["grade_accuracy"])


def _patients():
    y = np.array([0, 1, 1, 2, 2, 0, 0, 2])
    prob = np.array([
        [0.80, 0.02, 0.18],  # P1, pred Healthy (share 0.9; ignored by the rule)
        [0.10, 0.60, 0.30],  # P1, pred LGG, share 1/3
        [0.20, 0.30, 0.50],  # P1, pred HGG, share 0.625
        [0.70, 0.10, 0.20],  # P2, pred Healthy, share 2/3
        [0.60, 0.30, 0.10],  # P2, pred Healthy, share 1/4
        [0.90, 0.05, 0.05],  # P3 healthy only
        [0.90, 0.05, 0.05],  # P3
        [0.10, 0.20, 0.70],  # P4, share 7/9
    ])
    pids = np.array(["P1", "P1", "P1", "P2", "P2", "P3", "P3", "P4"])
    return y, prob, pids


def test_patient_grade_rule_and_auc():
    y, prob, pids = _patients()
    t = patient_grade(y, prob, pids, CLASSES).set_index("patient_id")
    assert list(t.index) == ["P1", "P2", "P4"]
    assert t.attrs["n_healthy_only"] == 1 and t.attrs["healthy_only"] == ["P3"]
    # P1: mean over predicted-tumour slices only (all slices would give 0.619 -> HGG)
    assert t.loc["P1", "score"] == pytest.approx((1 / 3 + 0.625) / 2)
    assert t.loc["P1", "pred_grade"] == "LGG" and t.loc["P1", "true_grade"] == "LGG"
    assert t.loc["P1", "n_slices_used"] == 2
    # P2: no slice predicted tumour -> all slices
    assert t.loc["P2", "score"] == pytest.approx((2 / 3 + 1 / 4) / 2)
    assert t.loc["P2", "aggregated_over"] == "all slices"
    assert t.loc["P2", "pred_grade"] == "LGG" and t.loc["P2", "true_grade"] == "HGG"
    assert t.loc["P4", "pred_grade"] == "HGG"
    # HGG scores 0.458, 0.778 vs LGG 0.479 -> 1 of 2 pairs ranked right
    table = t.reset_index()
    table.attrs = t.attrs
    assert patient_grade_auc(table) == pytest.approx(0.5)
    one_grade = table[table["true_grade"] == "HGG"]
    assert math.isnan(patient_grade_auc(one_grade))


def test_patient_with_two_grades_raises():
    with pytest.raises(ValueError, match="several grades"):
        patient_grade([1, 2], [[0.1, 0.5, 0.4]] * 2, ["A", "A"], CLASSES)


def test_curves_shapes():
    c = curves(Y, P, CLASSES)
    assert set(c) == set(CLASSES)
    for name, e in c.items():
        assert e["fpr"].shape == e["tpr"].shape and e["fpr"].ndim == 1
        assert e["precision"].shape == e["recall"].shape
        assert e["fpr"][0] == 0 and e["tpr"][-1] == 1
    assert c["Healthy"]["roc_auc"] == pytest.approx(8 / 9)
    assert c["HGG"]["prevalence"] == pytest.approx(2 / 6)
    fig = plot_roc_pr(c, "tiny")
    assert len(fig.axes) == 2 and fig._suptitle.get_text() == "tiny"
    fig = plot_confusion(slice_metrics(Y, P, CLASSES)["confusion"], "cm")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "2\n66.7 %" in texts and fig.axes[0].get_title() == "cm"


def test_summarise_folds_and_pooled():
    folds = [(Y, P), (np.array([0, 1, 2]), np.eye(3) * 0.7 + 0.1)]
    rows = []
    for k, (y, p) in enumerate(folds):
        s = slice_metrics(y, p, CLASSES)["summary"]
        s.insert(0, "fold", k)
        rows.append(s)
    pooled = pooled_metrics([f[0] for f in folds], [f[1] for f in folds], CLASSES)
    assert pooled["summary"].iloc[0]["n_slices"] == 9
    assert pooled["summary"].iloc[0]["accuracy"] == pytest.approx(7 / 9)
    assert set(pooled["curves"]) == set(CLASSES)
    t = summarise_folds(rows, pooled=pooled["summary"]).set_index("metric")
    assert "fold" not in t.index
    assert t.loc["accuracy", "mean"] == pytest.approx((4 / 6 + 1) / 2)
    assert t.loc["accuracy", "std"] == pytest.approx(np.std([4 / 6, 1], ddof=1))
    assert t.loc["accuracy", "n_folds"] == 2
    assert t.loc["accuracy", "pooled"] == pytest.approx(7 / 9)


def test_report_writer(tmp_path, monkeypatch):
    import gpcore.evaluation.classification as mod

    y, prob, pids = _patients()
    label = "synthetic phantom, patient-level split, profile quick, fold 0"
    titles = []
    real_save = mod.save_figure

    def spy(fig, stem):
        titles.append(fig._suptitle.get_text() if fig._suptitle else fig.axes[0].get_title())
        return real_save(fig, stem)

    monkeypatch.setattr(mod, "save_figure", spy)
    paths = write_classification_report(y, prob, CLASSES, pids, tmp_path / "tables",
                                        tmp_path / "figures", label)
    expected = {f"tables/{t}.{ext}" for t in ("classification_summary",
                                              "classification_per_class", "confusion_matrix",
                                              "tumour_only_grade", "patient_grade")
                for ext in ("csv", "md")}
    expected |= {f"figures/{f}.{ext}" for f in ("roc_pr", "confusion_matrix")
                 for ext in ("png", "pdf")}
    assert {p.relative_to(tmp_path).as_posix() for p in paths} == expected
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert len(titles) == 2 and all(label in t for t in titles)
    summary = pd.read_csv(tmp_path / "tables/classification_summary.csv")
    assert summary["run"].iloc[0] == label
    cm = pd.read_csv(tmp_path / "tables/confusion_matrix.csv")
    assert list(cm.columns) == ["run", "true", "pred Healthy", "pred LGG", "pred HGG"]
    tg = pd.read_csv(tmp_path / "tables/tumour_only_grade.csv").iloc[0]
    assert tg["n_patients"] == 3 and tg["n_patients_healthy_only"] == 1
    assert tg["patient_grade_auc"] == pytest.approx(0.5)
    assert len(pd.read_csv(tmp_path / "tables/patient_grade.csv")) == 3


def test_report_without_a_healthy_class_grades_every_slice_and_patient(tmp_path):
    """Figshare-like classes (every slice holds a tumour): accuracy over all slices and a
    patient class from the mean probability, instead of an error."""
    import numpy as np
    import pandas as pd

    classes = ["meningioma", "glioma", "pituitary"]
    y = np.array([0, 0, 1, 1, 2, 2])
    prob = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.8 + 0.2 / 3
    out = tumour_only_grade_accuracy(y, prob, classes)
    assert out["n_slices"] == 6 and out["grade_accuracy"] == pytest.approx(4 / 6)
    write_classification_report(y, prob, classes, np.array(list("aabbcc")), tmp_path,
                                tmp_path / "f", "test")
    patients = pd.read_csv(tmp_path / "patient_grade.csv")
    assert patients.set_index("patient_id").loc["b", "pred_grade"] == "glioma"
    assert len(patients) == 3
