"""The recipe study's validation scores (experiments.recipe): chance level and the rare
grade's recall / F1."""
import numpy as np
import pytest

from experiments.recipe import chance_macro_f1, rare_class_scores

CLASSES = ["Healthy", "LGG", "HGG"]


def test_rare_class_scores_measure_lgg_under_calling():
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    predicted = np.array([0, 0, 1, 1, 0, 2, 2, 2, 2, 2])  # 1 of 4 LGG found, 1 false LGG
    scores = rare_class_scores(labels, predicted, CLASSES)
    assert scores["val_lgg_recall"] == pytest.approx(0.25)
    assert scores["val_lgg_f1"] == pytest.approx(2 * 0.5 * 0.25 / 0.75)
    absent = rare_class_scores(np.array([0, 2]), np.array([0, 2]), CLASSES)
    assert np.isnan(absent["val_lgg_recall"]) and np.isnan(absent["val_lgg_f1"])
    assert np.isnan(rare_class_scores(labels, predicted, ["a", "b", "c"])["val_lgg_f1"])


def test_chance_macro_f1_is_the_uniform_guess():
    labels = np.array([0] * 6 + [1] * 2 + [2] * 2)
    p, q = np.array([0.6, 0.2, 0.2]), 1 / 3
    assert chance_macro_f1(labels, 3) == pytest.approx(np.mean(2 * p * q / (p + q)))
