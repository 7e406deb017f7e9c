"""Map rules (gpcore.inference.maps): which map is thresholded, the brain restriction, and
their choice on validation data beside the offset (evaluation.select_map_rule)."""
import numpy as np
import pytest

from gpcore.evaluation.segmentation import dice_iou, score_slices, select_map_rule
from gpcore.inference import heatmap_to_mask
from gpcore.inference.maps import (MAP_RULES, MaskRule, brain_mask, peak_outside_brain,
                                      tumour_map)

H = W = 32


def _disk(cy, cx, r):
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2


def test_rules_on_a_known_map():
    hm = np.stack([np.full((H, W), 1.0), np.zeros((H, W)), np.zeros((H, W))]).astype(np.float32)
    hm[1, 5:10, 5:10] = -2.0  # LGG scored by absence: dark on the lesion
    hm[2, 5:10, 5:10] = 4.0
    assert tumour_map(hm, 0, "predicted") is None  # predicted Healthy: empty mask
    np.testing.assert_array_equal(tumour_map(hm, 1, "predicted"), hm[1])
    np.testing.assert_array_equal(tumour_map(hm, 1, "sum"), hm[1] + hm[2])
    np.testing.assert_array_equal(tumour_map(hm, 1, "evidence"),
                                  np.maximum(hm[1], hm[2]) - hm[0])
    # no Healthy class: the sum runs over every class, evidence is own map minus the mean
    np.testing.assert_array_equal(tumour_map(hm, 0, "sum", None), hm.sum(0))
    np.testing.assert_allclose(tumour_map(hm, 2, "evidence", None), hm[2] - hm.mean(0))
    with pytest.raises(ValueError, match="map rule"):
        tumour_map(hm, 1, "mean")


def test_brain_mask_fills_holes_and_restriction_keeps_mask_inside():
    img = np.zeros((2, H, W), np.float32)
    img[0][_disk(16, 16, 10)] = 1.0
    img[0][_disk(16, 16, 2)] = 0.0  # a zero-valued hole inside the brain (e.g. CSF at 0)
    brain = brain_mask(img)
    assert brain[16, 16] and brain.sum() == _disk(16, 16, 10).sum()
    hm = np.zeros((H, W), np.float32)
    hm[:, :3] = 5.0          # a border artefact outside the brain
    hm[_disk(16, 12, 3)] = 2.0
    outside = heatmap_to_mask(hm, 0.0, cleanup=False)
    inside = heatmap_to_mask(hm, 0.0, cleanup=False, region=brain)
    assert outside[:, :3].all()
    assert not (inside & ~brain).any() and inside[16, 12]
    # the same through MaskRule, with the brain taken from the image
    rule = MaskRule("predicted", True, 0.0, True)
    m = rule.mask(np.stack([hm, hm]), 1, healthy_class=0, image=img)
    assert not (m & ~brain).any() and m[16, 12]


def _inverted_dataset(n=6, seed=0):
    """LGG slices whose LGG map is dark on the lesion while the HGG map is bright there:
    the predicted-class map cannot segment, the sum / evidence maps can."""
    rng = np.random.default_rng(seed)
    heat = rng.normal(0, 0.05, (n, 3, H, W)).astype(np.float32)
    masks = np.zeros((n, H, W), np.uint8)
    images = np.zeros((n, 4, H, W), np.float32)
    for i in range(n):
        lesion = _disk(10 + i, 14, 4)
        masks[i][lesion] = 2
        images[i][:, _disk(16, 16, 13)] = 1.0
        heat[i, 1][lesion] -= 2.0
        heat[i, 2][lesion] += 3.0
        heat[i, :, :, :2] += 4.0  # border artefact in every channel, outside the brain
    probs = np.tile([0.1, 0.8, 0.1], (n, 1))
    return heat, probs, masks, np.ones(n, int), images


def test_select_map_rule_finds_the_evidence_inside_the_brain():
    heat, probs, masks, labels, images = _inverted_dataset()
    brain = np.stack([brain_mask(x) for x in images])
    choice, grid = select_map_rule(heat, probs, masks, labels, brain=brain, workers=1)
    assert set(grid["rule"]) == set(MAP_RULES) and set(grid["in_brain"]) == {False, True}
    best = grid.groupby(["rule", "in_brain"])["median_dice"].max()
    assert best["predicted", False] < 0.2
    assert choice["rule"] in ("sum", "evidence") and choice["median_dice"] > 0.8
    # the chosen setting scores the same through score_slices
    scores = score_slices(heat, probs, masks, labels, choice["offset"], choice["cleanup"],
                          rule=choice["rule"], in_brain=choice["in_brain"], brain=brain,
                          workers=1)
    assert np.median(scores["dice"]) == pytest.approx(choice["median_dice"])
    # border peaks: the predicted map peaks outside the brain on every slice
    assert peak_outside_brain(heat, probs, brain, np.ones(len(heat), bool)) == 1.0


def test_brain_rule_needs_brain_masks_and_old_choices_load():
    heat, probs, masks, labels, _ = _inverted_dataset(2)
    with pytest.raises(ValueError, match="brain masks"):
        score_slices(heat, probs, masks, labels, 0.3, in_brain=True)
    choice, grid = select_map_rule(heat, probs, masks, labels, workers=1)  # no brain: skipped
    assert not grid["in_brain"].any()
    old = MaskRule.from_choice({"offset": 0.4, "cleanup": False})
    assert old == MaskRule("predicted", False, 0.4, False)
    assert MaskRule.from_choice({**choice}).rule == choice["rule"]


def test_relative_threshold_is_chosen_where_multi_otsu_takes_the_plateau():
    """A small bright spot on a brain-wide plateau of a weaker response: the upper multi-Otsu
    threshold keeps the plateau; the relative threshold (chosen on the same grid) the spot.
    The choice round-trips through offset_choice.json's keys into MaskRule."""
    n = 6
    rng = np.random.default_rng(1)
    heat = rng.normal(0, 0.01, (n, 3, H, W)).astype(np.float32)
    masks = np.zeros((n, H, W), np.uint8)
    images = np.zeros((n, 4, H, W), np.float32)
    for i in range(n):
        brain = _disk(16, 16, 13)
        images[i][:, brain] = 1.0
        heat[i, 2][brain] += 1.0                 # plateau over the whole brain
        spot = _disk(12 + i % 3, 14, 3)
        heat[i, 2][spot] += np.linspace(2.0, 3.0, spot.sum())
        masks[i][spot] = 4
    probs = np.tile([0.1, 0.1, 0.8], (n, 1))
    labels = np.full(n, 2)
    brain = np.stack([brain_mask(x) for x in images])
    choice, grid = select_map_rule(heat, probs, masks, labels, brain=brain, workers=1,
                                   rules=("predicted",), in_brain=(True,),
                                   offsets=(0.0,), thresholds=("multiotsu", "relative"))
    by = grid.groupby("threshold")["median_dice"].max()
    assert by["relative"] > 0.9 > by["multiotsu"]
    assert choice["threshold"] == "relative" and 0 < choice["offset"] < 1
    rule = MaskRule.from_choice(choice)
    assert rule.threshold == "relative" and "relative" in rule.describe()
    m = rule.mask(heat[0], 2, healthy_class=0, brain=brain[0])
    assert dice_iou(m, masks[0] > 0)[0] > 0.9


def test_map_auroc_scores_each_slice_with_its_own_class_without_healthy():
    """Without a Healthy class a map is class-specific: a glioma slice is scored with the
    glioma map (the class of ``labels``), not the last class's (a measurement error that made
    Figshare maps look inverted)."""
    from gpcore.evaluation.segmentation import map_auroc_per_slice

    lesion = _disk(16, 16, 4)
    hm = np.zeros((2, 3, H, W), np.float32)
    hm[0, 0][lesion] = 3.0   # slice 0: class 0 (e.g. meningioma) lights its lesion
    hm[0, 2][~lesion] = 1.0  # and the last class's map is high everywhere else
    hm[1, 2][lesion] = 2.0   # slice 1: class 2 lights its lesion
    masks = np.stack([lesion, lesion])
    labels = np.array([0, 2])
    own = map_auroc_per_slice(hm, masks, [0, 1], "predicted", None, None, labels)
    np.testing.assert_allclose(own, [1.0, 1.0])
    last = map_auroc_per_slice(hm, masks, [0, 1], "predicted", None, None)
    assert last[0] == 0.0 and last[1] == 1.0
