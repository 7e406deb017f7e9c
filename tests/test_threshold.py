"""Heatmap -> mask as published (spec gp-models.md §10): threshold, fallback, clean-up."""
import numpy as np
import pytest
from skimage.filters import threshold_multiotsu, threshold_otsu

from gpcore.inference import (PUBLISHED_OFFSETS, clean_mask, heatmap_channel,
                                 heatmap_to_mask, threshold_value)
from gpcore.inference.threshold import (closing, fill_small_holes, largest_component,
                                           remove_small_objects)


def blob_map(shape=(96, 96), centre=(40, 50), radius=15, peak=3.0, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    inside = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2
    hm = rng.normal(0.0, 0.05, shape) - 0.5
    hm[inside] = peak + rng.normal(0, 0.05, inside.sum())
    return hm.astype(np.float32), inside


def test_published_offsets():
    assert PUBLISHED_OFFSETS == {"gp_unet": 0.3, "gp_recon_resnet": 1.6, "gp_shuffle_unet": 0.3}


@pytest.mark.parametrize("value", [0.0, -2.5, 7.0])
def test_constant_map_gives_empty_mask(value):
    hm = np.full((32, 32), value, np.float32)
    for cleanup in (True, False):
        mask = heatmap_to_mask(hm, cleanup=cleanup)
        assert mask.dtype == bool and mask.shape == hm.shape and not mask.any()


def test_all_negative_map_gives_empty_mask():
    hm = -1.0 - np.random.default_rng(1).random((40, 40))
    assert threshold_value(hm) is None  # no positive evidence: no threshold, empty mask
    assert not heatmap_to_mask(hm).any()
    assert not heatmap_to_mask(hm, cleanup=False).any()


def test_two_valued_map_uses_otsu_without_offset_or_floor():
    hm = np.full((30, 30), 1.0)
    hm[5:25, 5:25] = 3.0  # an offset of 5 and the floor would empty it; Otsu has neither
    assert threshold_value(hm, offset=5.0) == pytest.approx(threshold_otsu(hm))
    mask = heatmap_to_mask(hm, offset=5.0, cleanup=False)
    assert np.array_equal(mask, hm == 3.0)


def test_blob_heatmap_thresholds_to_blob():
    hm, inside = blob_map()
    t_hi = threshold_multiotsu(hm, classes=3, nbins=256)[-1]
    assert threshold_value(hm, 0.3) == pytest.approx(max(0.0, t_hi - 0.3))
    mask = heatmap_to_mask(hm, offset=0.3)
    assert np.array_equal(mask, inside)


def test_offset_lowers_threshold():
    rng = np.random.default_rng(2)
    hm = rng.normal(1.0, 1.0, (64, 64))
    t0, t1 = threshold_value(hm, 0.0), threshold_value(hm, 0.5)
    assert t1 == pytest.approx(t0 - 0.5)
    m0, m1 = heatmap_to_mask(hm, 0.0, cleanup=False), heatmap_to_mask(hm, 0.5, cleanup=False)
    assert m1.sum() > m0.sum() and np.all(m1[m0])
    assert np.array_equal(m0, hm > t0)  # strict inequality


def test_remove_small_objects_boundary():
    mask = np.zeros((40, 60), bool)
    mask[2:10, 2:10] = True               # 8 x 8 = 64 px: kept
    small = np.zeros_like(mask)
    small[30:39, 40:47] = True            # 9 x 7 = 63 px: removed
    mask |= small
    assert small.sum() == 63 and mask.sum() == 127
    out = remove_small_objects(mask, 64)
    assert out[2:10, 2:10].all() and not out[small].any()
    assert out.sum() == 64


def test_remove_small_objects_uses_4_connectivity():
    mask = np.zeros((30, 30), bool)
    mask[0:8, 0:4] = True       # 32 px
    mask[8:16, 4:8] = True      # 32 px, touching only diagonally
    assert not remove_small_objects(mask, 64).any()     # two 32-px objects, not one of 64


def test_fill_small_holes_boundary():
    mask = np.ones((40, 80), bool)
    mask[5:13, 5:21] = False     # 128 px hole: stays
    mask[20:29, 40:54] = False   # 9 x 14 = 126 px ...
    mask[20, 54] = False         # ... + 1 = 127 px: filled
    assert (~mask[20:29, 40:55]).sum() == 127
    out = fill_small_holes(mask, 128)
    assert not out[5:13, 5:21].any()
    assert out[20:29, 40:55].all()


def test_closing_and_largest_component():
    mask = np.zeros((40, 40), bool)
    mask[10:20, 10:20] = True
    mask[10:20, 21:25] = True  # one-pixel gap, bridged by closing with disk(2)
    closed = closing(mask, 2)
    assert closed[11:19, 20].all() and closed.sum() > mask.sum()
    # largest 8-connected component wins; diagonal contact counts as connected
    comp = np.zeros((30, 30), bool)
    comp[0:5, 0:5] = True          # 25
    comp[5:10, 5:10] = True        # 25, diagonal neighbour of the first -> one object of 50
    comp[20:28, 20:28] = True      # 64
    assert np.array_equal(largest_component(comp), np.pad(np.ones((8, 8), bool),
                                                          ((20, 2), (20, 2))))
    comp[15:17, 0:20] = True       # 40 -> (0..10 block) 50 vs 64 vs 40: still the 64 block
    assert largest_component(comp).sum() == 64


def test_largest_component_tie_keeps_lowest_label():
    mask = np.zeros((20, 20), bool)
    mask[12:16, 2:6] = True    # 16 px, later in raster order
    mask[2:6, 12:16] = True    # 16 px, first in raster order
    out = largest_component(mask)
    assert out[2:6, 12:16].all() and not out[12:16, 2:6].any()


def test_cleanup_order_in_heatmap_to_mask():
    hm = np.full((80, 80), -1.0)
    hm[10:40, 10:40] = 2.0           # 900 px object
    hm[20:25, 20:25] = -1.0          # 25 px hole: filled
    hm[60:67, 60:69] = 2.0           # 63 px object: removed
    hm[0, 0] = 1.0                   # a third value, so multi-Otsu is used
    mask = heatmap_to_mask(hm, offset=0.3)
    expected = np.zeros_like(mask)
    expected[10:40, 10:40] = True
    assert np.array_equal(mask, expected)
    raw = heatmap_to_mask(hm, offset=0.3, cleanup=False)
    assert raw[60:67, 60:69].all() and not raw[20:25, 20:25].any()


def test_scale_changes_pixel_sizes():
    mask = np.zeros((60, 60), bool)
    mask[5:13, 5:13] = True          # 64 px
    mask[30:45, 30:45] = True        # 225 px
    # at scale 1 the largest component rule keeps the 225-px square
    assert clean_mask(mask, 1.0).sum() == 225
    obj = np.zeros((60, 60), bool)
    obj[5:13, 5:13] = True           # 64 px, below 64 * 1.5**2 = 144
    assert clean_mask(obj, 1.0).sum() == 64
    assert not clean_mask(obj, 1.5).any()
    ring = np.zeros((60, 60), bool)
    ring[10:40, 10:40] = True
    ring[15:27, 15:26] = False       # 132 px hole: kept at scale 1, filled at scale 1.5 (< 288)
    assert not clean_mask(ring, 1.0)[15:27, 15:26].all()
    assert clean_mask(ring, 1.5)[15:27, 15:26].all()
    with pytest.raises(ValueError):
        clean_mask(obj, 0)


def test_heatmap_channel():
    logits = np.array([0.1, 2.0, -1.0])
    hm = np.stack([np.full((4, 4), k, np.float32) for k in range(3)])
    assert heatmap_channel(logits, hm)[0, 0] == 1
    assert heatmap_channel(logits, hm, mode="true", true_label=2)[0, 0] == 2
    with pytest.raises(ValueError):
        heatmap_channel(logits, hm, mode="true")
    with pytest.raises(ValueError):
        heatmap_channel(logits, hm, mode="other")
    with pytest.raises(ValueError):
        heatmap_channel(logits, hm[:2])


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="channel"):
        heatmap_to_mask(np.zeros((2, 4, 4)))
    hm = np.zeros((8, 8))
    hm[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        heatmap_to_mask(hm)


def test_matches_skimage_max_size_equivalents():
    """The hand-written filters equal scikit-image's ``max_size=63`` / ``127`` forms (0.26)."""
    import warnings

    from scipy import ndimage as ndi
    from skimage import morphology

    rng = np.random.default_rng(3)
    for _ in range(10):
        mask = ndi.gaussian_filter(rng.random((80, 80)), 2) > 0.5
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ref_obj = morphology.remove_small_objects(mask, max_size=63, connectivity=1)
                ref_hole = morphology.remove_small_holes(mask, max_size=127, connectivity=1)
            except TypeError:  # scikit-image < 0.26: min_size / area_threshold
                ref_obj = morphology.remove_small_objects(mask, min_size=64, connectivity=1)
                ref_hole = morphology.remove_small_holes(mask, area_threshold=128, connectivity=1)
            ref_close = morphology.binary_closing(mask, morphology.disk(2))
        assert np.array_equal(remove_small_objects(mask, 64), ref_obj)
        assert np.array_equal(fill_small_holes(mask, 128), ref_hole)
        assert np.array_equal(closing(mask, 2), ref_close)


def test_two_valued_all_negative_map_gives_an_empty_mask():
    from gpcore.evaluation.segmentation import score_slices

    hm = np.full((32, 32), -2.0)
    hm[:16] = -1.0
    assert not heatmap_to_mask(hm, 0.3, cleanup=False).any()
    heatmaps = np.stack([np.stack([hm, hm])])  # (1, K=2, H, W)
    scores = score_slices(heatmaps, np.array([[0.2, 0.8]]), (hm > -1.5)[None].astype(np.uint8),
                          np.array([1]), offset=0.3, cleanup=False, healthy_class=None,
                          workers=1)
    assert scores.mask_area.iloc[0] == 0 and scores.dice.iloc[0] == 0


def test_relative_threshold_follows_the_peak_and_ignores_the_sign():
    from gpcore.inference.threshold import mask_from_rule, threshold_rule

    hm = np.full((20, 20), -3.0)
    hm[2:12, 2:12] = -2.0          # brain-wide plateau
    hm[4:7, 4:7] = -1.0            # a weak spot, every value negative
    region = np.zeros((20, 20), bool)
    region[1:15, 1:15] = True
    kind, (med, peak) = threshold_rule(hm, region, "relative")
    assert kind == "relative" and peak == -1.0 and med == np.median(hm[region])
    mask = mask_from_rule(hm, (kind, (med, peak)), 0.5, cleanup=False, region=region)
    np.testing.assert_array_equal(mask, hm > med + 0.5 * (peak - med))
    assert mask.sum() == 9  # the spot, not the plateau
    # the published threshold finds nothing in an all-negative map
    assert threshold_rule(hm, region)[0] == "empty"
    assert threshold_rule(np.ones((5, 5)), None, "relative")[0] == "empty"
    with pytest.raises(ValueError, match="threshold must be one of"):
        threshold_rule(hm, None, "otsu")


def test_clean_mask_on_its_box_equals_the_whole_slice():
    """clean_mask works on the mask's bounding box + margin: the same as the four steps on the
    whole slice, for masks anywhere (touching borders, holes open to a side, salt) and for a
    slice narrower than the hole area (then the box is the whole slice)."""
    from scipy import ndimage as ndi

    from gpcore.inference.threshold import CLOSING_RADIUS, MIN_HOLE_AREA, MIN_OBJECT_AREA

    rng = np.random.default_rng(7)
    for trial in range(300):
        h, w = rng.choice([12, 40, 64, 128]), rng.choice([12, 40, 64, 128])
        scale = float(rng.choice([128 / 240, 64 / 240, 1.0, 1.5]))
        field = ndi.gaussian_filter(rng.normal(size=(h, w)), sigma=rng.uniform(1, 6))
        mask = field > np.quantile(field, rng.uniform(0.5, 0.995))
        if trial % 3 == 0:
            mask |= rng.random((h, w)) < 0.01
        radius = max(1, int(round(CLOSING_RADIUS * scale)))
        whole = largest_component(closing(fill_small_holes(
            remove_small_objects(mask, MIN_OBJECT_AREA * scale ** 2),
            MIN_HOLE_AREA * scale ** 2), radius))
        assert np.array_equal(clean_mask(mask, scale), whole), (trial, h, w, scale)


def test_fill_small_holes_keeps_components_on_open_sides():
    mask = np.ones((10, 10), bool)
    mask[0:3, 4:6] = False          # a 6-px notch on the top side
    assert fill_small_holes(mask, 128)[0:3, 4:6].all()
    kept = fill_small_holes(mask, 128, open_sides=(True, False, False, False))
    assert not kept[0:3, 4:6].any()
