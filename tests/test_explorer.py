"""The threshold explorer (gpcore.study.explorer), headless: the logic class against the threshold
and scoring functions it must reuse, and the ipywidgets UI driven by setting widget values (no
Jupyter kernel). The evaluated runs are written directly in the layout `gpcore evaluate`
leaves (predictions/test, evaluation/offset_choice.json, config.yaml), over a tiny real store,
with synthetic Gaussian-blob heatmaps whose masks respond to the offset predictably."""
import base64
import json
import shutil

import matplotlib
import numpy as np
import pandas as pd
import pytest
import yaml

from gpcore.data.store import build_store
from gpcore.evaluation.segmentation import dice_iou, score_slices
from gpcore.study.explorer import ThresholdExplorer, build_explorer, find_evaluated_runs
from gpcore.inference.maps import brain_mask
from gpcore.inference.threshold import heatmap_to_mask, threshold_value
from fake_data import fake_subject

matplotlib.use("Agg")
widgets = pytest.importorskip("ipywidgets")

SIZE = 32
#: model -> (test patients, chosen offset, chosen clean-up, published offset, blob sigma)
MODELS = {"gp_unet": ([1, 2, 3, 4], 0.2, True, 0.3, 4.0),
          "gp_recon_resnet": ([2, 3], 0.6, False, 1.6, 6.0)}


def _pid(i):
    return f"BraTS20_Training_{i:03d}"


def _write_run(root, store, model, patients, chosen, cleanup, published, sigma, seed):
    run = root / model / "fold0"
    folder = run / "predictions" / "test"
    folder.mkdir(parents=True)
    index = store.index[store.index.patient_id.isin([_pid(i) for i in patients])]
    # the last patient keeps only 5 of its 8 slices: patients differ in slice count
    last = index[index.patient_id == _pid(patients[-1])]
    index = index.drop(last.index[5:]).reset_index(drop=True)
    n = len(index)
    rng = np.random.default_rng(seed)
    labels = index.label.to_numpy()
    pred = labels.copy()
    pred[::3] = (labels[::3] + 1) % 3  # some misclassified slices: predicted != true channel
    logits = rng.normal(0, 0.3, (n, 3))
    logits[np.arange(n), pred] += 3
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    heatmaps = rng.normal(0, 0.05, (n, 3, SIZE, SIZE)) - 0.2
    for i, r in enumerate(index.row):
        gt = np.asarray(store.masks[r]) > 0
        cy, cx = np.argwhere(gt).mean(0) if gt.any() else rng.uniform(8, 24, 2)
        blob = 1.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))
        for k in range(3):
            heatmaps[i, k] += blob * (1.0 if k == labels[i] else 0.6)
    index.assign(pred=pred, pred_class=[store.classes[p] for p in pred]).to_csv(
        folder / "index.csv", index=False)
    np.save(folder / "probabilities.npy", prob.astype(np.float32))
    np.save(folder / "heatmaps.npy", heatmaps.astype(np.float16))
    (folder / "predict.json").write_text("{}\n")  # written last: the predictions are complete
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"config": {"model": {"name": model}, "profile": "smoke"},
         "store": {"path": str(store.path)}, "classes": store.classes}))
    (run / "evaluation").mkdir()
    (run / "evaluation" / "offset_choice.json").write_text(json.dumps(
        {"offset": chosen, "cleanup": cleanup, "median_dice": 0.5,
         "published_offset": published, "chosen_on": "validation patients"}))
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("explorer")
    subjects = [fake_subject(i, "HGG" if i % 2 else "LGG") for i in range(1, 5)]
    store = build_store(subjects, root / "store", source={"kind": "test"}, size=SIZE,
                        channels=("t1", "t2", "t1ce", "flair"), workers=1, progress=False)
    return {m: _write_run(root / "runs", store, m, *spec, seed=s)
            for s, (m, spec) in enumerate(MODELS.items())}


@pytest.fixture
def ui(runs):
    return build_explorer(runs, dpi=30)


def _cohort_reference(state):
    """The cohort median Dice computed independently: score_slices over every test slice of
    the model, then the median over those with tumour."""
    run = state.run
    labels, channel, healthy, rule = run.labels, state.channel, 0, state.map_rule
    if channel not in ("predicted", "true"):
        labels, channel, healthy = np.full(len(labels), state.classes.index(channel)), "true", None
        rule = "predicted"
    brain = np.stack([brain_mask(run.store.images[r]) for r in run.index["row"]])
    scores = score_slices(run.heatmaps, run.probabilities, run.masks, labels,
                          offset=state.offset, cleanup=state.cleanup, channel=channel,
                          healthy_class=healthy, workers=1, rule=rule,
                          in_brain=state.in_brain, brain=brain,
                          threshold=state.thresholding)
    return float(np.median(scores.loc[scores.gt_area > 0, "dice"]))


def test_logic_reuses_threshold_and_scoring(runs):
    state = ThresholdExplorer(runs, workers=1)
    assert state.models == list(MODELS) and state.model == "gp_unet"
    assert (state.offset, state.cleanup) == (0.2, True)  # the validation-chosen setting
    assert state.patients == [_pid(i) for i in (1, 2, 3, 4)]
    assert state.channels == ["predicted", "true", "Healthy", "LGG", "HGG"]
    assert state.ground_truth().any()  # starts on the patient's largest tumour
    # the image is the t1ce channel of the store row
    store_images = state.run.store.images
    np.testing.assert_array_equal(state.image(), store_images[state.store_row, 2])
    for offset, cleanup in [(0.2, True), (0.7, False), (1.9, True)]:
        state.set(offset=offset, cleanup=cleanup)
        hm = state.heatmap()
        assert hm.shape == (SIZE, SIZE)
        expected = heatmap_to_mask(hm, offset, cleanup, scale=SIZE / 240)
        np.testing.assert_array_equal(state.mask(), expected)
        assert state.threshold() == pytest.approx(threshold_value(hm, offset))
        assert state.slice_dice() == dice_iou(expected, state.ground_truth())[0]
        assert state.cohort_median_dice() == pytest.approx(_cohort_reference(state))
    # cached per (model, offset, cleanup, channel)
    assert state.cohort_scores() is state.cohort_scores()
    state.set(offset=0.2, cleanup=True)
    assert state.cohort_key() == ("gp_unet", 0.2, True, "predicted", "predicted", False,
                                  "multiotsu")
    # the relative threshold: the offset is the fraction from the median to the peak
    state.set(thresholding="relative", offset=0.6, cleanup=False)
    state.set(channel="true")  # a tumour slice: its true class's map is thresholded
    hm = state.heatmap()
    t = np.median(hm) + 0.6 * (hm.max() - np.median(hm))
    assert state.threshold() == pytest.approx(t)
    np.testing.assert_array_equal(state.mask(), hm > t)
    assert state.cohort_median_dice() == pytest.approx(_cohort_reference(state))


@pytest.mark.parametrize("channel", ["predicted", "true", "Healthy", "HGG"])
def test_slice_dice_agrees_with_the_cohort_rows(runs, channel):
    """Every slice shown agrees with its row of the cohort scores, for each channel mode
    (Healthy predicted / true: empty mask; a class name: that channel always)."""
    state = ThresholdExplorer(runs, workers=1)
    state.set(channel=channel, offset=0.5, cleanup=False)
    cohort = state.cohort_scores().set_index("row")
    masks = state.run.masks
    assert len(cohort) == int((masks > 0).reshape(len(masks), -1).any(1).sum())
    checked = 0
    for patient in state.patients:
        state.set_patient(patient)
        for position in range(state.n_slices):
            state.set_slice(position)
            if state.row in cohort.index:
                assert state.slice_dice() == pytest.approx(cohort.loc[state.row, "dice"])
                assert state.mask().sum() == cohort.loc[state.row, "mask_area"]
                checked += 1
    assert checked == len(cohort)
    info = state.slice_info
    if channel == "Healthy":
        assert state.channel_class() == 0
    elif channel in ("predicted", "true"):
        k = info["pred"] if channel == "predicted" else info["label"]
        assert state.channel_class() == (None if k == 0 else k)


def test_offset_slider_direction_and_labels(ui):
    state, ws = ui.state, ui.widgets
    assert ws["offset"].value == pytest.approx(0.2)  # starts at the validation-chosen offset
    assert "validation-chosen <b>0.20</b>" in ws["offsets"].value
    assert "published <b>0.30</b>" in ws["offsets"].value
    ws["cleanup"].value = False
    areas = {}
    for offset in (0.0, 0.4, 0.8, 1.2):
        ws["offset"].value = offset
        assert state.offset == pytest.approx(offset)
        areas[offset] = int(state.mask().sum())
        # thr = max(0, t_hi - offset), mask = heatmap > thr: a larger offset lowers the
        # threshold, so the mask grows; a smaller one shrinks it
        assert state.threshold() == pytest.approx(threshold_value(state.heatmap(), offset))
        summary = ui.last_summary
        assert summary["slice_dice"] == dice_iou(state.mask(), state.ground_truth())[0]
        assert f"slice Dice <b>{summary['slice_dice']:.3f}</b>" in ws["scores"].value
        median = _cohort_reference(state)
        assert summary["cohort_median_dice"] == pytest.approx(median)
        assert f"cohort median Dice <b>{median:.3f}</b>" in ws["scores"].value
    assert areas[0.0] < areas[0.4] < areas[0.8] <= areas[1.2]
    ws["offset"].value = 0.4
    assert state.mask().sum() == areas[0.4]
    ws["use_published"].click()
    assert ws["offset"].value == pytest.approx(0.3) and state.offset == pytest.approx(0.3)
    assert "◀ published" in ws["offsets"].value
    ws["use_chosen"].click()
    assert (state.offset, state.cleanup) == (0.2, True) and ws["cleanup"].value is True
    assert "◀ validation-chosen" in ws["offsets"].value


def test_cleanup_checkbox_applies_the_cleanup(ui):
    state, ws = ui.state, ui.widgets
    ws["offset"].value = 1.0
    for cleanup in (False, True, False):
        ws["cleanup"].value = cleanup
        assert state.cleanup is cleanup
        np.testing.assert_array_equal(state.mask(), heatmap_to_mask(
            state.heatmap(), 1.0, cleanup, scale=SIZE / 240))
        assert ui.last_summary["cohort_median_dice"] == pytest.approx(_cohort_reference(state))


def test_map_rule_and_brain_widgets(ui):
    """The map dropdown and the brain-only box change the thresholded map, the mask and the
    cohort score exactly as MaskRule / score_slices do."""
    from gpcore.inference.maps import MaskRule

    state, ws = ui.state, ui.widgets
    assert (state.map_rule, state.in_brain) == ("predicted", False)  # old choice files
    for rule in ("evidence", "sum"):
        for in_brain in (True, False):
            ws["map_rule"].value = rule
            ws["in_brain"].value = in_brain
            assert (state.map_rule, state.in_brain) == (rule, in_brain)
            k = state.channel_class()
            hms = np.asarray(state.run.heatmaps[state.row], np.float32)
            expected = MaskRule(rule, in_brain, state.offset, state.cleanup).mask(
                hms, k if k is not None else state.run.healthy_class, state.run.healthy_class,
                SIZE / 240, brain=state.run.brain[state.row])
            np.testing.assert_array_equal(state.mask(), expected)
            if in_brain:
                assert not (state.mask() & ~state.run.brain[state.row]).any()
            assert ui.last_summary["cohort_median_dice"] == pytest.approx(
                _cohort_reference(state))
            assert f"{rule} map" in ws["scores"].value
    ws["use_chosen"].click()
    assert (state.map_rule, state.in_brain) == ("predicted", False)


def test_patient_change_resets_the_slice_range(ui):
    state, ws = ui.state, ui.widgets
    assert ws["slice"].max == 7  # 8 slices
    ws["slice"].value = 7
    assert state.slice == 7
    ws["patient"].value = _pid(4)  # 5 slices kept
    assert state.patient == _pid(4) and state.n_slices == 5
    assert ws["slice"].max == 4 and 0 <= ws["slice"].value <= 4
    assert ws["slice"].value == state.slice
    assert state.ground_truth().any()  # the largest tumour of the new patient
    rows, slice_indices = state.run.index, []
    for position in range(5):
        ws["slice"].value = position
        assert state.slice == position and rows.patient_id.iat[state.row] == _pid(4)
        slice_indices.append(state.slice_info["slice_index"])
    assert slice_indices == sorted(slice_indices)  # positions follow the store's slice order
    ws["patient"].value = _pid(1)
    assert ws["slice"].max == 7


def test_model_and_channel_change(ui):
    state, ws = ui.state, ui.widgets
    ws["patient"].value = _pid(1)
    ws["model"].value = "gp_recon_resnet"
    assert list(ws["patient"].options) == [_pid(2), _pid(3)]
    assert ws["patient"].value in ws["patient"].options and state.patient == ws["patient"].value
    # offset and clean-up reset to this model's validation-chosen values
    assert ws["offset"].value == pytest.approx(0.6) and ws["cleanup"].value is False
    assert "published <b>1.60</b>" in ws["offsets"].value
    ws["use_published"].click()
    assert state.offset == pytest.approx(1.6)
    assert ui.last_summary["cohort_median_dice"] == pytest.approx(_cohort_reference(state))
    # a slice where predicted and true class differ: the channels show different heatmaps
    found = [(p, i) for p in state.patients for i in range(len(state.run.patient_rows(p)))
             if _misclassified_tumour(state, p, i)]
    ws["patient"].value = found[0][0]
    ws["slice"].value = found[0][1]
    info = state.slice_info
    assert info["pred"] != info["label"] and 0 not in (info["pred"], info["label"])
    shown = {}
    for channel in ("predicted", "true", "Healthy"):
        ws["channel"].value = channel
        assert state.channel == channel
        shown[channel] = state.heatmap()
        assert ui.last_summary["cohort_median_dice"] == pytest.approx(
            _cohort_reference(state))
    hms = np.asarray(state.run.heatmaps[state.row], np.float32)
    np.testing.assert_array_equal(shown["predicted"], hms[info["pred"]])
    np.testing.assert_array_equal(shown["true"], hms[info["label"]])
    np.testing.assert_array_equal(shown["Healthy"], hms[0])


def _misclassified_tumour(state, patient, position):
    row = state.run.patient_rows(patient)[position]
    pred, label = int(np.argmax(state.run.probabilities[row])), int(state.run.labels[row])
    return pred != label and 0 not in (pred, label)


def test_figure_is_redrawn_on_every_change(ui, tmp_path):
    ws = ui.widgets

    def shown():
        (out,) = ws["output"].outputs
        return base64.b64decode(out["data"]["image/png"])

    assert ui.draw_count == 1 and shown().startswith(b"\x89PNG")
    before = shown()
    changes = [("offset", 1.5), ("cleanup", False), ("slice", 0), ("channel", "true"),
               ("patient", _pid(2)), ("model", "gp_recon_resnet")]
    for i, (name, value) in enumerate(changes, start=2):
        ws[name].value = value
        assert ui.draw_count == i, name  # one redraw per change, none from the syncing
        assert shown() != before, name
        before = shown()
    path = ui.save(tmp_path / "view.png", dpi=40)
    assert path.read_bytes().startswith(b"\x89PNG")
    assert isinstance(ui.box, widgets.VBox)


def test_find_evaluated_runs_and_errors(runs, tmp_path):
    root = next(iter(runs.values())).parents[1]
    assert find_evaluated_runs(root) == runs  # published models first, in their order
    assert find_evaluated_runs(root, fold=3) == {}
    only_later = tmp_path / "later"  # a study run with --folds 2,3: no fold 0
    for model, run in runs.items():
        shutil.copytree(run, only_later / model / "fold2")
    assert list(find_evaluated_runs(only_later)) == list(runs)
    assert all(p.name == "fold2" for p in find_evaluated_runs(only_later).values())
    with pytest.raises(FileNotFoundError, match="gpcore evaluate"):
        ThresholdExplorer({"x": tmp_path})
    state = ThresholdExplorer(list(runs.values()))  # named by config.yaml
    assert state.models == list(MODELS)
    with pytest.raises(ValueError, match="slice must be"):
        state.set_slice(99)
    with pytest.raises(ValueError, match="channel must be"):
        state.set_channel("Meningioma")
    assert isinstance(state.run.index, pd.DataFrame)


@pytest.mark.slow
def test_on_a_trained_and_evaluated_run(tmp_path):
    """The explorer reads what `gpcore train` + `gpcore evaluate` really write."""
    from gpcore.data.splits import patient_split, save_split
    from gpcore.evaluation.run import evaluate
    from gpcore.training import train

    subjects = [fake_subject(i, "HGG" if i % 2 else "LGG") for i in range(1, 11)]
    store = build_store(subjects, tmp_path / "store", source={"kind": "test"}, size=16,
                        workers=1, progress=False)
    split = save_split(patient_split(store.index, n_folds=2, val_fraction=0.25, seed=0),
                       tmp_path / "split.csv")
    run = train(store.path, split, tmp_path / "runs" / "gp_unet" / "fold0", profile="smoke",
                progress=False, overrides=["train.epochs=1"])
    evaluate(run, n_resamples=50, workers=1, progress=False)
    ui = build_explorer(find_evaluated_runs(tmp_path / "runs"), dpi=30)
    state = ui.state
    choice = json.loads((run / "evaluation" / "offset_choice.json").read_text())
    assert ui.widgets["offset"].value == pytest.approx(choice["offset"])
    assert state.cleanup == choice["cleanup"]
    slices = pd.read_csv(run / "evaluation" / "segmentation_slices.csv")
    tumour = slices[slices.gt_area > 0]
    assert state.cohort_median_dice() == pytest.approx(float(np.median(tumour.dice)))
    ui.widgets["offset"].value = 1.0
    assert state.cohort_median_dice() == pytest.approx(_cohort_reference(state))
