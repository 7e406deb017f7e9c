"""Patient-level splits, normalisation and the PyTorch dataset over a store."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from gpcore.data.dataset import Augmentation, SliceDataset, rotate_nearest
from gpcore.data.normalise import normalise
from gpcore.data.splits import (is_leaky, load_split, patient_split, published_split, save_split,
                                split_rows)
from gpcore.data.store import build_store
from fake_data import fake_subject


def _index(n_patients=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        grade = "LGG" if p % 5 == 0 else "HGG"
        for k in range(rng.integers(3, 9)):
            rows.append({"patient_id": f"P{p:03d}", "grade": grade, "fold": "",
                         "label": 0 if k % 3 == 0 else (1 if grade == "LGG" else 2)})
    idx = pd.DataFrame(rows)
    idx.insert(0, "row", np.arange(len(idx)))
    return idx


def test_patient_split_is_disjoint_covering_and_stratified(tmp_path):
    idx = _index()
    split = patient_split(idx, n_folds=5, val_fraction=0.25, seed=3)
    assert set(split.fold) == set(range(5))
    for k, fold in split.groupby("fold"):
        assert fold.patient_id.is_unique and len(fold) == 40  # each patient in one part
        parts = fold.groupby("part").patient_id.apply(set)
        assert not (parts["train"] & parts["val"]) and not (parts["train"] & parts["test"])
        test = fold[fold.part == "test"]
        assert (test.stratum == "LGG").sum() == 8 // 5 + (k < 8 % 5)  # 8 LGG over 5 folds
        assert (fold[fold.part == "val"].stratum == "LGG").sum() >= 1
        rows = [split_rows(split, idx, k, p) for p in ("train", "val", "test")]
        assert sum(map(len, rows)) == len(idx)
        assert not set(idx.patient_id[rows[0]]) & set(idx.patient_id[rows[2]])
    tests = split[split.part == "test"]
    assert tests.patient_id.is_unique and len(tests) == 40  # test folds partition the cohort
    path = save_split(split, tmp_path / "split.csv")
    pd.testing.assert_frame_equal(load_split(path), split)
    assert patient_split(idx, 5, 0.25, seed=3).equals(split)  # deterministic


def test_dataset_folds_are_used_when_present():
    idx = _index(12)
    idx["fold"] = idx.patient_id.str[-3:].astype(int) % 4 + 1
    split = patient_split(idx, val_fraction=0.2)
    assert sorted(split.fold.unique()) == [0, 1, 2, 3]
    test0 = set(split[(split.fold == 0) & (split.part == "test")].patient_id)
    assert test0 == set(idx[idx.fold == 1].patient_id)


def test_published_split_is_slice_level_and_leaky():
    idx = _index()
    split = published_split(idx)
    assert is_leaky(split)
    fold0 = split[split.fold == 0]
    assert len(fold0) == len(idx)
    assert (fold0.part == "test").sum() == int(np.ceil(0.25 * len(idx)))
    by_part = {p: set(idx.patient_id[fold0[fold0.part == p].row]) for p in ("train", "test")}
    assert by_part["train"] & by_part["test"]  # patients leak across train and test


def test_normalisation_modes():
    img = torch.zeros(4, 8, 8)
    img[:, 2:6, 2:6] = torch.arange(64, dtype=torch.float32).view(4, 4, 4) + 1
    out = normalise(img, "max")
    assert out.max() == 1 and torch.allclose(out, img / 64)  # one scalar over all channels
    z = normalise(img, "zscore")
    brain = img.ne(0).any(0)
    assert torch.allclose(z[:, brain].mean(1), torch.zeros(4), atol=1e-5)
    assert (z[:, ~brain] == 0).all()
    p = normalise(img, "percentile")
    assert p.min() >= 0 and p.max() <= 1
    m = normalise(img, "median")
    assert torch.allclose(m[:, brain].median(1).values, torch.ones(4)) and (m[:, ~brain] == 0).all()
    # a bright lesion leaves the normal tissue's median-normalised intensity where it was
    # (under max normalisation it darkens every other pixel of the slice)
    lesion = img.clone()
    lesion[:, 5, 5] = 1000.0  # the brightest pixel, brighter still: the median stays
    assert torch.allclose(normalise(lesion, "median")[:, 3, 3], m[:, 3, 3])
    assert not torch.allclose(normalise(lesion, "max")[:, 3, 3], out[:, 3, 3])
    with pytest.raises(ValueError, match="no positive intensity"):
        normalise(torch.zeros(4, 8, 8), "max")
    torch.testing.assert_close(normalise(torch.zeros(4, 8, 8), "max", fallback=img), img / 64)


def test_rotation_by_90_degrees_is_exact_and_mask_follows_image():
    x = torch.arange(36, dtype=torch.float32).view(1, 6, 6)
    r = rotate_nearest(x, 90)
    assert torch.equal(r, torch.rot90(x, 1, (1, 2))) or torch.equal(r, torch.rot90(x, -1, (1, 2)))
    torch.manual_seed(0)
    image = torch.zeros(2, 32, 24)
    mask = torch.zeros(32, 24, dtype=torch.int64)
    mask[5:12, 4:10] = 2
    image[:, mask > 0] = 7.0
    for _ in range(10):
        img_a, mask_a = Augmentation()(image, mask)
        assert torch.equal(img_a[0] > 0, mask_a > 0) and set(mask_a.unique().tolist()) <= {0, 2}


def test_channel_scale_multiplies_each_contrast_within_its_bounds():
    image = torch.rand(4, 16, 12) + 0.5
    plain = Augmentation(max_angle=0, p_hflip=0, p_vflip=0)
    assert torch.equal(plain(image, None)[0], image)  # off by default
    scaled = Augmentation(max_angle=0, p_hflip=0, p_vflip=0, channel_scale=0.3)
    ratios = []
    for _ in range(50):
        out, _ = scaled(image, None)
        r = (out / image).flatten(1)
        assert torch.allclose(r, r[:, :1].expand_as(r))  # one factor per contrast
        ratios.append(r[:, 0])
    ratios = torch.stack(ratios)
    assert ratios.min() >= 1 / 1.3 - 1e-6 and ratios.max() <= 1.3 + 1e-6
    assert ratios.std(0).min() > 0.05  # the contrasts' factors differ from draw to draw


def test_slice_dataset_with_workers(tmp_path):
    store = build_store([fake_subject(1), fake_subject(2, "LGG")], tmp_path / "s",
                        source={"kind": "test"}, workers=1, progress=False)
    ds = SliceDataset(store, rows=np.arange(4, 12), augmentation=Augmentation())
    item = ds[0]
    assert item["image"].shape == (4, 16, 12) and item["image"].dtype == torch.float32
    assert item["image"].max() <= 1 and item["row"] == 4 and item["mask"].shape == (16, 12)

    def batches(workers):
        torch.manual_seed(5)
        loader = DataLoader(ds, batch_size=4, num_workers=workers, shuffle=True)
        return [b for b in loader]
    serial, parallel = batches(0), batches(2)
    assert sum(len(b["row"]) for b in parallel) == 8
    assert torch.equal(torch.cat([b["row"] for b in serial]),
                       torch.cat([b["row"] for b in parallel]))
    assert {tuple(b["patient_id"]) for b in parallel}
