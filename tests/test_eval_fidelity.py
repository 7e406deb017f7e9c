import numpy as np
import pandas as pd

from gpcore.evaluation.fidelity import confidence_fidelity, example_rows


def _scores(n_patients=8, per=10, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    prob = rng.uniform(0.3, 1.0, n_patients * per)
    dice = np.clip(prob - 0.3 + rng.normal(0, noise, prob.size), 0, 1)
    return pd.DataFrame({"row": np.arange(prob.size), "prob_pred": prob, "dice": dice,
                         "gt_area": 10, "label": rng.integers(1, 3, prob.size), "pred": 1,
                         "mask_area": 5}), np.repeat(np.arange(n_patients), per)


def test_spearman_and_patient_bootstrap_ci():
    scores, pids = _scores()
    res = confidence_fidelity(scores, pids, n_resamples=500)
    from scipy.stats import spearmanr

    assert np.isclose(res["spearman"], spearmanr(scores.prob_pred, scores.dice).statistic)
    assert res["low"] <= res["spearman"] <= res["high"] and res["spearman"] > 0.7
    assert res["n_patients"] == 8 and res["n_slices"] == 80


def test_healthy_and_undefined_slices_are_left_out_and_one_patient_gives_a_point_ci():
    scores, pids = _scores(n_patients=1)
    scores.loc[:4, "gt_area"] = 0
    scores.loc[5, "dice"] = np.nan
    res = confidence_fidelity(scores, pids, n_resamples=50)
    assert res["n_slices"] == 4 and res["low"] == res["high"] == res["spearman"]


def test_example_rows_pick_best_median_worst_per_class():
    scores = pd.DataFrame({"row": range(5), "dice": [0.1, 0.9, 0.5, 0.3, 0.7],
                           "gt_area": [1, 1, 1, 1, 0], "label": [2, 2, 2, 1, 2]})
    picks = example_rows(scores, ["Healthy", "LGG", "HGG"])
    assert picks == [("LGG", "best", 3), ("LGG", "median", 3), ("LGG", "worst", 3),
                     ("HGG", "best", 1), ("HGG", "median", 2), ("HGG", "worst", 0)]
