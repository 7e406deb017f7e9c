"""One model contract (gpcore.models.contract.HeatmapClassifier), one grid: every registered
model, trained briefly into a run folder, goes through predict, evaluate, explain, the explorer
and ``gpcore segment`` alike (as pytorch-grad-cam tests every method on every model)."""
import json

import numpy as np
import pytest
import torch

from fake_data import fake_store
from gpcore.models import create_model, list_models
from gpcore.models.contract import HeatmapClassifier, check_model_class
from gpcore.rundir import RunDir

MODELS = list_models()


def test_every_registered_model_satisfies_the_contract():
    assert set(MODELS) == {"gp_unet", "gp_shuffle_unet", "gp_recon_resnet", "mprotonet",
                           "cnn_gradcam"}
    for name in MODELS:
        with torch.device("meta"):
            model = create_model(name)
        assert isinstance(model, HeatmapClassifier), name
        assert (model.model_name, model.in_channels, model.n_classes) == (name, 4, 3)
        assert isinstance(model.display_name, str) and model.display_name
        assert model.check_spatial_size(64, 64) is None  # a size every architecture takes


def test_a_class_without_heatmaps_is_refused_at_registration():
    class NoHeatmap(torch.nn.Module):
        display_name = "no heatmap"

    with pytest.raises(TypeError, match="forward_with_heatmap"):
        check_model_class(NoHeatmap)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    store, split = fake_store(root, 6, size=32)
    from gpcore.data.phantom import generate_phantom

    phantom = generate_phantom(root / "phantom", 1, seed=0, workers=1, progress=False)
    return {"root": root, "store": store, "split": split, "phantom": phantom}


@pytest.fixture(scope="module", params=MODELS)
def run(request, data):
    from gpcore.evaluation.run import evaluate
    from gpcore.training import train

    out = data["root"] / "runs" / request.param
    train(data["store"], data["split"], out, model=request.param, profile="smoke",
          overrides=["train.epochs=1", "train.num_workers=0"], progress=False)
    evaluate(out, n_resamples=50, workers=1, progress=False)
    return RunDir(out)


def test_predict_and_evaluate(run):
    from gpcore.inference.predict import read_predictions

    test = read_predictions(run.predictions("test"))
    n, k = test["probabilities"].shape
    assert k == 3 and test["heatmaps"].shape == (n, 3, 32, 32)
    assert np.allclose(test["probabilities"].sum(1), 1, atol=1e-5)
    choice = run.offset_choice()
    assert choice["chosen_on"] == "validation patients" and run.model_name in choice["label"]
    assert len(run.evaluation_table("segmentation_slices")) == n


def test_explain(run, capsys):
    from gpcore.cli import main

    assert main(["explain", str(run.path), "--profile", "smoke", "--no-progress"]) == 0
    assert str(run.explanations) in capsys.readouterr().out
    out = run.explanations
    record = json.loads((out / "explain.json").read_text())
    assert record["model"] == run.model_name
    assert np.isfinite(record["metrics"]["ap_slice_mean"]["estimate"])


def test_explorer(run):
    from gpcore.study.explorer import ThresholdExplorer

    state = ThresholdExplorer({run.model_name: run.path}, workers=1)
    assert state.heatmap().shape == (32, 32)
    assert state.mask().shape == (32, 32)
    assert 0.0 <= state.cohort_median_dice() <= 1.0


def test_segment(run, data, tmp_path):
    from gpcore.inference.segment import segment

    table = segment(run.checkpoint, data["phantom"], tmp_path / "seg", progress=False)
    assert len(table) == 1
    summary = json.loads(next((tmp_path / "seg").glob("*/*_summary.json")).read_text())
    assert summary["model"] == run.model_name
    assert summary["predicted_class"] in run.classes
    assert summary["mask_rule_source"].startswith("validation-chosen")
