"""Training-slice selection by axial level (gpcore.data.sampling.level_filter)."""
import numpy as np
import pytest

from gpcore.data.sampling import brain_areas, level_filter
from gpcore.data.store import SliceStore
from fake_data import fake_store


def test_level_filter_keeps_slices_with_large_brain_sections(tmp_path):
    store = SliceStore(fake_store(tmp_path, n_subjects=4, size=16)[0])
    rows = np.arange(len(store))
    area = brain_areas(store.images, rows)
    expected = np.asarray([(np.asarray(store.images[r]) != 0).any(0).sum() for r in rows])
    np.testing.assert_array_equal(area, expected)
    kept = level_filter(store, rows, 0.8)
    pids = store.index["patient_id"].to_numpy()
    for r in rows:  # kept exactly when its brain is >= 80 % of its patient's largest
        largest = area[pids == pids[r]].max()
        assert (r in kept) == (area[r] >= 0.8 * largest)
    np.testing.assert_array_equal(level_filter(store, rows, 0.0), rows)
    with pytest.raises(ValueError, match="min_brain_fraction"):
        level_filter(store, rows, 1.5)
    assert 0 < len(kept) < len(rows)  # the fake volumes' brains vary along the axis
