import numpy as np
import pytest

from gpcore.evaluation.agreement import correlations, pointing_game, top_k_iou


def test_identical_and_opposite_maps():
    rng = np.random.default_rng(0)
    a = rng.random((16, 16))
    brain = np.zeros((16, 16), bool)
    brain[2:14, 2:14] = True
    assert correlations(a, a, brain) == pytest.approx((1.0, 1.0))
    assert correlations(a, -a, brain) == pytest.approx((-1.0, -1.0))
    assert top_k_iou(a, a, brain, 0.1) == 1.0
    assert top_k_iou(a, -a, brain, 0.1) == 0.0
    assert np.isnan(correlations(a, np.ones_like(a), brain)[0])


def test_only_brain_pixels_count():
    a = np.zeros((8, 8))
    b = np.zeros((8, 8))
    a[0, 0], b[7, 7] = 100.0, 100.0  # disagreement outside the brain
    brain = np.zeros((8, 8), bool)
    brain[2:6, 2:6] = True
    a[brain] = b[brain] = np.arange(16.0)
    assert correlations(a, b, brain) == pytest.approx((1.0, 1.0))


def test_pointing_game():
    tumour = np.zeros((8, 8), np.uint8)
    tumour[2:4, 2:4] = 2
    a = np.zeros((8, 8))
    a[3, 3] = 1.0
    assert pointing_game(a, tumour) is True
    assert pointing_game(np.roll(a, 4, axis=0), tumour) is False
    assert pointing_game(a, np.zeros_like(tumour)) is None
    with pytest.raises(ValueError, match="shapes differ"):
        correlations(a, a[:4], tumour > 0)
