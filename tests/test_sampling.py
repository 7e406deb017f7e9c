"""Training-slice selection by axial level (gpcore.data.sampling.level_filter)."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from gpcore.data.sampling import brain_areas, level_filter


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
