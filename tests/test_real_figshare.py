"""The real Figshare slices of ../shared through the manifest reader, the store and the split."""
import numpy as np
import pytest

from gpcore.data.manifest import read_manifest
from gpcore.data.prepare import FIGSHARE_CLASSES
from gpcore.data.splits import patient_split, split_rows
from gpcore.data.store import build_store


@pytest.fixture(scope="module")
def figshare_store(shared_dir, tmp_path_factory):
    items = read_manifest(shared_dir / "data/figshare-cheng/manifest.csv")
    patients = sorted({s.patient_id for s in items})
    # every 8th patient: all classes and folds, seconds to build
    chosen = set(patients[::8])
    subset = [s for s in items if s.patient_id in chosen]
    return build_store(subset, tmp_path_factory.mktemp("fs") / "store", source={"kind": "manifest"},
                       classes=FIGSHARE_CLASSES, class_codes={1: 0, 2: 1, 3: 2}, size=64,
                       workers=2, progress=False)


def test_store_from_real_slices(figshare_store):
    store = figshare_store
    assert store.images.dtype == np.uint8 and store.images.shape[1:] == (1, 64, 64)
    assert set(np.unique(store.masks)) == {0, 1}
    idx = store.index
    assert set(idx.label) == {0, 1, 2} and set(idx.fold) == {1, 2, 3, 4}
    assert (idx.tumour_area > 0).mean() > 0.99  # every slice shows its tumour
    # the tumour is brighter than the rest of the slice on T1CE, on average
    masks = store.masks[:] > 0
    images = store.images[:, 0].astype(float)
    assert images[masks].mean() > images[~masks & (images > 0)].mean()


def test_official_folds_become_patient_level_outer_folds(figshare_store):
    idx = figshare_store.index
    split = patient_split(idx, val_fraction=0.2, seed=0)
    assert sorted(split.fold.unique()) == [0, 1, 2, 3]
    for k in range(4):
        test = split_rows(split, idx, k, "test")
        train = split_rows(split, idx, k, "train")
        assert set(idx.fold[test]) == {k + 1}
        assert not set(idx.patient_id[test]) & set(idx.patient_id[train])
