"""The slice store: labelling rules, resumable and atomic building, bad input, reading."""
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpcore.data import DataError
from gpcore.data.store import SliceStore, build_store
from fake_data import fake_samples, fake_subject

SOURCE = {"kind": "test"}


def _build(out, subjects, **kw):
    kw = {"workers": 1, "progress": False, **kw}
    return build_store(subjects, out, source=SOURCE, channels=("t1", "t2", "t1ce", "flair"), **kw)


def test_volume_slices_are_labelled_as_published(tmp_path):
    store = _build(tmp_path / "s", [fake_subject(1, "HGG"), fake_subject(2, "LGG")])
    assert store.images.shape == (16, 4, 16, 12)  # z 1..8 kept for two subjects
    assert store.images.dtype == np.int16 and store.masks.dtype == np.uint8
    idx = store.index
    assert list(idx.columns) == ["row", "patient_id", "slice_index", "sample_id", "label",
                                 "class_name", "grade", "tumour_area", "source_file", "fold"]
    one = idx[idx.patient_id == "BraTS20_Training_001"]
    assert one.slice_index.tolist() == list(range(1, 9))  # empty slices 0 and 9 dropped
    tumour = one.slice_index.isin([3, 4, 5])
    assert (one.label[tumour] == 2).all() and (one.label[~tumour] == 0).all()
    assert (idx[idx.grade == "LGG"].label.isin([0, 1])).all()
    assert set(np.unique(store.masks)) == {0, 1, 2, 4}  # sub-region labels kept
    assert (idx.tumour_area == (store.masks > 0).sum(axis=(1, 2))).all()
    meta = json.loads((tmp_path / "s/store.json").read_text())
    assert meta["n_slices"] == 16 and meta["classes"] == ["Healthy", "LGG", "HGG"]
    assert not (tmp_path / "s/shards").exists()


def test_resize_keeps_labels_and_parallel_build_matches_serial(tmp_path):
    subjects = [fake_subject(i, g) for i, g in ((1, "HGG"), (2, "LGG"), (3, "HGG"))]
    serial = _build(tmp_path / "a", subjects, size=8)
    parallel = _build(tmp_path / "b", subjects, size=8, workers=2)
    assert serial.images.shape[-2:] == (8, 8)
    assert set(np.unique(serial.masks)) <= {0, 1, 2, 4}
    np.testing.assert_array_equal(serial.images, parallel.images)
    pd.testing.assert_frame_equal(serial.index, parallel.index)


def test_stop_on_bad_input_names_the_file_and_resume_skips_finished(tmp_path):
    subjects = [fake_subject(1), fake_subject(2, tag="bad"), fake_subject(3)]
    with pytest.raises(DataError, match="t1.nii.gz: unexpected label 3"):
        _build(tmp_path / "s", subjects)
    assert not (tmp_path / "s/store.json").exists()  # nothing a later stage could read
    with pytest.raises(DataError):
        SliceStore(tmp_path / "s")
    shard = tmp_path / "s/shards/BraTS20_Training_001"
    assert (shard / "index.csv").is_file()
    # mark the finished shard: if the re-run reused it, the mark reaches the store
    images = np.load(shard / "images.npy")
    images[0, 0, 0, 0] = 12345
    np.save(shard / "images.npy", images)
    store = _build(tmp_path / "s", [fake_subject(1), fake_subject(3)])
    assert store.images[0, 0, 0, 0] == 12345
    assert store.index.patient_id.nunique() == 2


def test_skip_mode_finishes_and_reports(tmp_path):
    reader_problem = DataError("/data/BraTS20_Training_009", "missing contrast t2",
                               "restore the file")
    store = _build(tmp_path / "s", [fake_subject(1), fake_subject(2, tag="bad")],
                   on_error="skip", skipped=[reader_problem])
    assert store.index.patient_id.unique().tolist() == ["BraTS20_Training_001"]
    report = pd.read_csv(tmp_path / "s/skipped.csv")
    assert len(report) == 2 and report.problem.str.contains("unexpected label 3").any()
    assert report.problem.str.contains("missing contrast t2").any()


def test_rebuild_with_same_parameters_is_a_no_op_and_other_parameters_refuse(tmp_path):
    _build(tmp_path / "s", [fake_subject(1)])
    stamp = (tmp_path / "s/store.json").stat().st_mtime_ns
    _build(tmp_path / "s", [fake_subject(1)])
    assert (tmp_path / "s/store.json").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="other parameters"):
        _build(tmp_path / "s", [fake_subject(1)], size=8)


def test_slice_samples_grouped_by_patient(tmp_path):
    samples = fake_samples(n_patients=4, per_patient=3)
    store = build_store(samples, tmp_path / "f", source=SOURCE, workers=1, progress=False,
                        classes=("meningioma", "glioma", "pituitary"),
                        class_codes={1: 0, 2: 1, 3: 2})
    assert store.images.shape == (12, 1, 20, 20) and store.images.dtype == np.uint8
    idx = store.index
    assert idx.groupby("patient_id").size().tolist() == [3, 3, 3, 3]
    assert set(idx.label) == {0, 1, 2} and set(idx.fold) == {1, 2, 3, 4}
    assert (idx.tumour_area == 35).all()


def test_store_pickles_without_its_arrays(tmp_path):
    store = _build(tmp_path / "s", [fake_subject(1)])
    _ = store.images
    clone = pickle.loads(pickle.dumps(store))
    assert clone._images is None
    np.testing.assert_array_equal(clone.images[3], store.images[3])


def _noisy_head(seed: int = 0, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A JPEG-like slice: a bright disc (the head) with a dark hole (a ventricle) on a
    background of noise of a few grey levels; returns ``(image (1, H, W) uint8, head)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    head = (yy - 24) ** 2 + (xx - 22) ** 2 < 16 ** 2
    image = rng.integers(0, 8, size=(size, size))  # background noise
    image[head] = rng.integers(80, 200, size=int(head.sum()))
    image[(yy - 24) ** 2 + (xx - 22) ** 2 < 4 ** 2] = 3  # dark, inside the head
    return image[None].astype(np.uint8), head


def test_head_mask_finds_the_head_of_a_noisy_slice_and_keeps_its_dark_interior():
    from gpcore.data.head import head_mask, zero_background

    image, head = _noisy_head()
    mask = head_mask(image)
    assert (mask == head).mean() > 0.99 and mask[24, 22]  # the dark hole belongs to the head
    zeroed = zero_background(image)
    assert zeroed.dtype == image.dtype and (zeroed[0][~mask] == 0).all()
    assert np.array_equal(zeroed[0][mask], image[0][mask])
    assert not head_mask(np.zeros((1, 8, 8))).any()


def _noisy_sample(sample):
    image, head = _noisy_head(int(sample.sample_id))
    mask = np.zeros(head.shape, np.uint8)
    mask[20:24, 14:18] = 1
    return image, mask


def test_2d_stores_can_zero_the_background_and_record_it(tmp_path):
    """``background="zero"`` (what the Figshare and manifest readers ask for): the background
    of each slice is 0 in the store and ``store.json`` says so; the default keeps the pixels and
    the parameters of stores built before."""
    from gpcore.data import SliceSample

    samples = [SliceSample(f"P{i}", str(i + 1), 1, "meningioma", 1, Path(f"/x/{i}.jpg"), None,
                           loader=_noisy_sample) for i in range(3)]
    kw = dict(source=SOURCE, workers=1, progress=False, classes=("meningioma",),
              class_codes={1: 0})
    kept = build_store(samples, tmp_path / "kept", **kw)
    zeroed = build_store(samples, tmp_path / "zeroed", background="zero", **kw)
    _, head = _noisy_head(1)
    assert (np.asarray(kept.images[0, 0])[~head] > 0).mean() > 0.5  # the noise as read
    assert (np.asarray(zeroed.images[0, 0])[~head] == 0).mean() > 0.99
    assert zeroed.meta["params"]["background"] == "zero"
    assert "background" not in kept.meta["params"]
    with pytest.raises(ValueError, match="background must be"):
        build_store(samples, tmp_path / "bad", background="blur", **kw)
