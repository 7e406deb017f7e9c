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


def test_promote_makes_a_current_recipe_run_the_studys_own_and_refuses_another(tmp_path):
    """``promote`` copies a recipe run trained exactly as the study would train it into the
    study's runs folder (weights and record; not its validation caches), keeps a current study
    run, sets a stale one aside, and refuses a run of another configuration in one line."""
    import shutil

    from experiments.recipe import promote, run_dir
    from fake_data import fake_store
    from gpcore.rundir import RunDir
    from gpcore.study.pipeline import train_models

    store, split = fake_store(tmp_path, 8)
    base, study_runs = tmp_path / "recipe", tmp_path / "runs"
    kw = dict(profile="smoke", models=["gp_unet"], folds=[0], progress=False,
              follow_up=False, study="phantom")
    trained = {}
    for variant, overrides in (("published", None), ("wide", ["model.wf=3"])):
        run = train_models(store, split, tmp_path / variant, overrides=overrides, **kw)[
            ("gp_unet", 0)]
        (run.path / "predictions").mkdir()  # a validation cache of `report`
        trained[variant] = run_dir(base, variant, "gp_unet", 0, 1701)
        trained[variant].parent.mkdir(parents=True)
        shutil.move(run.path, trained[variant])
    # the study's own run of fold 0 was trained with another configuration: set aside
    shutil.copytree(trained["wide"], study_runs / "gp_unet" / "fold0")
    args = (base, study_runs, store, split, "smoke", "phantom")

    with pytest.raises(ValueError, match=r"wide/gp_unet/fold0-seed1701: its configuration "
                                         r"differs.*adopt the variant"):
        promote(*args, "wide", ["gp_unet"], [(0, 1701)])
    with pytest.raises(ValueError, match="not a finished run; train it first"):
        promote(*args, "published", ["gp_unet"], [(1, 1701)])

    written = promote(*args, "published", ["gp_unet"], [(0, 1701)])
    study_run = RunDir.of(study_runs, "gp_unet", 0)
    assert written == [study_run.path] and study_run.is_trained
    assert (study_run.path / "best.safetensors").read_bytes() == \
        (trained["published"] / "best.safetensors").read_bytes()
    assert not (study_run.path / "predictions").exists()  # the study predicts for itself
    assert len(list(study_run.path.parent.glob("fold0.stale-*"))) == 1
    assert promote(*args, "published", ["gp_unet"], [(0, 1701)]) == []  # current: kept


def test_report_scores_only_the_runs_asked_for(tmp_path):
    """``report --runs`` keeps only those (fold, seed) pairs, of every variant (it used to be
    ignored, so a paired table silently pooled every cached seed of the other variant)."""
    import json
    import os

    from experiments.recipe import SCORE_VERSION, report, run_dir
    from gpcore.rundir import RunDir

    base = tmp_path / "recipe"
    scores = dict(val_macro_f1=0.8, chance_macro_f1=0.29, peak_outside_brain=0.0,
                  val_map_auroc=0.9, val_median_dice=0.7, val_median_dice_predicted_map=0.6,
                  val_median_dice_multiotsu=0.6, val_median_dice_lgg=0.5, val_lgg_recall=0.5,
                  val_lgg_f1=0.5, score_version=SCORE_VERSION)
    for variant, pairs in (("warmup", [(0, 1701), (0, 1702), (1, 1701)]),
                           ("blocks6", [(0, 1701), (1, 1701)])):
        for fold, seed in pairs:  # a finished run with its validation scores cached
            run = run_dir(base, variant, "gp_recon_resnet", fold, seed)
            run.mkdir(parents=True)
            (run / RunDir.SUMMARY).write_text("{}")
            (run / RunDir.CHECKPOINT).write_bytes(b"")
            cache = run / "recipe_val_evidence.json"
            cache.write_text(json.dumps(scores))
            os.utime(cache, (2e9, 2e9))  # newer than the weights: read, not re-scored

    kw = dict(models=("gp_recon_resnet",), evidence_only=True)
    everything = report(base, tmp_path / "all", **kw)
    assert dict(zip(everything.variant, everything.runs)) == {"warmup": 3, "blocks6": 2}
    paired = report(base, tmp_path / "paired", runs=[(0, 1701), (1, 1701)], **kw)
    assert dict(zip(paired.variant, paired.runs)) == {"warmup": 2, "blocks6": 2}
