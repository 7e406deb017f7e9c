"""Training-slice selection by axial level (gpcore.data.sampling.level_filter) and
class-aware sampling (class_sampling_weights, ClassAwareSampler)."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from gpcore.data.sampling import (ClassAwareSampler, brain_areas, class_sampling_weights,
                                  level_filter)


def _store():
    """Two patients whose brain cross-sections grow then shrink along the axis."""
    radii = [2, 4, 6, 7, 6, 4, 2]
    yy, xx = np.mgrid[:16, :16]
    images, pids = [], []
    for p, scale in (("A", 1.0), ("B", 0.8)):
        for r in radii:
            img = np.zeros((2, 16, 16), np.float32)
            img[1][(yy - 8) ** 2 + (xx - 8) ** 2 <= (r * scale) ** 2] = 1.0
            images.append(img)
            pids.append(p)
    return SimpleNamespace(images=np.stack(images), index=pd.DataFrame({"patient_id": pids}))


def test_level_filter_keeps_slices_with_large_brain_sections():
    store = _store()
    rows = np.arange(len(store.images))
    area = brain_areas(store.images, rows)
    np.testing.assert_array_equal(area, (store.images != 0).any(1).sum((1, 2)))
    kept = level_filter(store, rows, 0.5)
    pids = store.index["patient_id"].to_numpy()
    for r in rows:  # kept exactly when its brain is >= 50 % of its own patient's largest
        assert (r in kept) == (area[r] >= 0.5 * area[pids == pids[r]].max())
    assert 0 < len(kept) < len(rows)
    assert set(pids[kept]) == {"A", "B"}  # relative to each patient, not to the largest brain
    np.testing.assert_array_equal(level_filter(store, rows[::-1], 0.5), kept[::-1])
    np.testing.assert_array_equal(level_filter(store, rows, 0.0), rows)
    with pytest.raises(ValueError, match="min_brain_fraction"):
        level_filter(store, rows, 1.5)


def test_class_sampling_weights_give_class_shares_proportional_to_n_to_one_minus_power():
    labels = np.array([0] * 80 + [1] * 16 + [2] * 4)
    counts = np.array([80, 16, 4])
    for power in (0.0, 0.5, 1.0):
        w = class_sampling_weights(labels, power)
        assert w.shape == labels.shape and np.isclose(w.sum(), 1.0)
        share = np.array([w[labels == c].sum() for c in range(3)])
        expected = counts ** (1 - power) / (counts ** (1 - power)).sum()
        np.testing.assert_allclose(share, expected)
        assert np.ptp(w[labels == 2]) == 0  # equal within a class
    with pytest.raises(ValueError, match="class_sampling_power"):
        class_sampling_weights(labels, 1.5)


def test_class_aware_sampler_draws_by_weight_reproducibly_and_shards_ranks():
    labels = np.array([0] * 90 + [1] * 10)
    w = class_sampling_weights(labels, 1.0)  # balanced: ~half the draws are class 1
    s = ClassAwareSampler(w, seed=3)
    s.set_epoch(0)
    a = list(s)
    assert len(a) == len(s) == 100
    assert list(s) == a  # the same epoch draws the same slices
    s.set_epoch(1)
    assert list(s) != a
    draws = []
    for epoch in range(20):
        s.set_epoch(epoch)
        draws += list(s)
    rare = np.mean(labels[np.array(draws)] == 1)
    assert 0.45 < rare < 0.55
    # two ranks split one draw of the same epoch: disjoint positions, equal lengths
    r0, r1 = ClassAwareSampler(w, 2, 0, seed=3), ClassAwareSampler(w, 2, 1, seed=3)
    single = ClassAwareSampler(w, 1, 0, seed=3)
    for smp in (r0, r1, single):
        smp.set_epoch(5)
    assert len(r0) == len(r1) == 50
    merged = [x for pair in zip(list(r0), list(r1)) for x in pair]
    assert merged == list(single)
