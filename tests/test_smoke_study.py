"""The whole study, every notebook, headless with papermill on the smoke profile (what
``./run_all.sh --profile smoke`` runs), in a temporary output root: each expected table and
figure exists and holds sane values, and a second run skips every stage."""
import json

import pandas as pd

from gpcore.study.runner import STAGES, run_study

TABLES = ["models", "data_counts", "split_summary", "training", "classification",
          "classification_per_class", "tumour_only_grade", "patient_grade", "segmentation",
          "offset_grid_validation", "confidence_fidelity", "comparison", "comparison_long",
          "agreement", "efficiency", "threshold_explorer_view"]
FIGURES = ["model_sizes", "data_examples", "phantom_subjects", "training_curves",
           "offset_selection", "explanation_grid", "captum_grid", "deletion_curves", "agreement",
           "efficiency", "threshold_explorer"]
MODELS = ["gp_unet", "gp_shuffle_unet", "gp_recon_resnet", "mprotonet", "cnn_gradcam"]


def test_every_stage_ran_and_wrote_its_outputs(smoke_study):
    root, seconds = smoke_study
    results, figures = root / "results/phantom/smoke", root / "figures/phantom/smoke"
    for stage in STAGES:
        assert (results / "notebooks" / stage.notebook).is_file(), stage.name
    for name in TABLES:
        assert (results / f"{name}.csv").is_file() and (results / f"{name}.md").is_file(), name
    for name in FIGURES:
        assert (figures / f"{name}.png").stat().st_size > 5000, name
    env = json.loads((results / "environment.json").read_text())
    assert set(env["stage_seconds"]) == {s.name for s in STAGES}
    print(f"smoke study: {seconds:.0f} s")


def test_tables_hold_sane_values(smoke_study):
    results = smoke_study[0] / "results/phantom/smoke"
    training = pd.read_csv(results / "training.csv")
    assert sorted(training.model) == sorted(MODELS) and (training.epochs >= 1).all()
    cls = pd.read_csv(results / "classification.csv")
    assert cls.f1_macro.between(0, 1).all() and (cls.n_slices > 0).all()
    seg = pd.read_csv(results / "segmentation.csv")
    dice = seg[(seg.subset == "tumour") & (seg.metric == "median_dice")]
    assert set(dice.model) == set(MODELS)
    assert dice.estimate.between(0, 1).all() and (dice.low <= dice.high + 1e-12).all()
    long = pd.read_csv(results / "comparison_long.csv")
    ids = long[long.metric == "ids"]
    assert set(ids.model) == set(MODELS) and ids.estimate.between(0, 1).all()
    ap = long[long.metric == "ap_slice_mean"]
    assert ap.estimate.between(0, 1).all() and "all_brain_mask" in set(ap.model)
    agreement = pd.read_csv(results / "agreement.csv")
    rho = agreement[agreement.metric.str.startswith("spearman")].estimate.dropna()
    assert rho.between(-1, 1).all()
    eff = pd.read_csv(results / "efficiency.csv")
    assert set(eff.model) == set(MODELS) and (eff.parameters > 0).all()


def test_second_run_skips_every_stage(smoke_study, capsys):
    root = smoke_study[0]
    assert run_study("phantom", "smoke", output_root=root) == 0
    out = capsys.readouterr().out
    assert out.count("unchanged since its last run, skipped") == len(STAGES)
