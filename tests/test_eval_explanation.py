"""AP and IDS on hand-made cases whose answers are known."""
import numpy as np
import pytest
import torch

from gpcore.evaluation.explanation import (activation_precision, deletion_curve, deletion_masks,
                                           incremental_deletion_score)


def _tumour():
    seg = np.zeros((20, 20), np.uint8)
    seg[5:10, 5:10] = 2
    seg[6:8, 6:8] = 4
    return seg


def test_activation_precision_known_cases():
    seg = _tumour()
    perfect = (seg > 0).astype(float)
    assert activation_precision(perfect, seg) == {"ap": 1.0, "dsc": 1.0}
    outside = np.zeros((20, 20))
    outside[12:18, 12:18] = 1.0
    assert activation_precision(outside, seg) == {"ap": 0.0, "dsc": 0.0}
    assert activation_precision(np.full((4, 20, 20), 3.0), seg)["ap"] == 0.0  # constant map
    half = perfect.copy()
    half[12:17, 12:17] = 1.0  # 25 px on target, 25 px off: AP 0.5, DSC 2*25/(25+50)
    res = activation_precision(np.stack([half] * 4), seg)
    assert res["ap"] == pytest.approx(0.5) and res["dsc"] == pytest.approx(50 / 75)


def test_normalisation_is_over_the_whole_tensor():
    seg = _tumour()
    a = np.zeros((2, 20, 20))
    a[0][seg > 0] = 1.0  # channel 0 peaks on the tumour
    a[1][seg > 0] = 0.4  # channel 1 stays under 0.5 of the global max: empty activation
    assert activation_precision(a, seg)["ap"] == pytest.approx(0.5)


def test_ids_of_known_curves():
    linear = np.linspace(1, 0, 51)
    assert incremental_deletion_score(linear) == pytest.approx(0.5)
    immediate = np.r_[1.0, np.zeros(50)]
    assert incremental_deletion_score(immediate) == pytest.approx(0.01)
    assert incremental_deletion_score(np.full(51, 0.7)) == 0.0
    overshoot = np.r_[1.0, 1.2, np.linspace(1, 0, 49)]  # clipped to the end points
    assert incremental_deletion_score(overshoot) <= 1.0


def test_deletion_masks_remove_two_percent_per_step_and_ties_together():
    attr = torch.arange(100, dtype=torch.float32).view(1, 10, 10)
    keep = deletion_masks(attr)
    removed = (~keep).flatten(1).sum(1).numpy()
    assert removed[0] == 0 and removed[-1] == 100 and removed[1] == 2 and removed[25] == 50
    flat = torch.zeros(1, 10, 10)
    assert (~deletion_masks(flat)[1]).all()  # one flat region goes in one step


def test_deletion_curve_rewards_attribution_on_the_evidence():
    # a toy classifier: class 1 if any pixel is bright (the "tumour"), else class 0
    def model(x):
        bright = (x.amax(dim=(1, 2, 3)) > 0.5).float()
        return torch.stack([1 - bright, bright], 1)

    n = 16
    images = torch.rand(n, 2, 12, 12) * 0.3
    labels = np.arange(n) % 2
    yy, xx = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")
    distance = ((yy - 4.5) ** 2 + (xx - 4.5) ** 2).sqrt()
    on = (-distance).expand(n, 12, 12)  # highest on the bright spot: deleted first
    off = distance.expand(n, 12, 12)  # lowest on the bright spot: deleted last
    for i in range(n):
        if labels[i]:
            images[i, :, 4:6, 4:6] = 1.0
    good = incremental_deletion_score(deletion_curve(model, images, on, labels)[:, 1])
    bad = incremental_deletion_score(deletion_curve(model, images, off, labels)[:, 1])
    assert good < 0.1 < 0.8 < bad
