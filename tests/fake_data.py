"""Small in-memory subjects for store tests (module-level loaders, so worker processes can
unpickle them)."""
from pathlib import Path

import numpy as np

from gpcore.data import DataError, SliceSample, Volume, VolumeSubject

SHAPE = (4, 16, 12, 10)  # (C, X, Y, Z): z 0 and 9 empty, brain in z 1..8, tumour in z 3..5


def fake_volume(subject: VolumeSubject) -> Volume:
    if "bad" in subject.subject_id:
        raise DataError(subject.image_paths[0], "unexpected label 3",
                        "BraTS 2020 uses 0, 1, 2, 4")
    seed = int(subject.subject_id[-3:])
    rng = np.random.default_rng(seed)
    image = np.zeros(SHAPE, np.float32)
    image[:, 2:14, 2:10, 1:9] = rng.integers(1, 500, size=(4, 12, 8, 8))
    seg = np.zeros(SHAPE[1:], np.uint8)
    seg[5:9, 4:8, 3:6] = 2
    seg[6:8, 5:7, 4] = 4
    seg[6, 5, 4] = 1
    return Volume(image=image, seg=seg, affine=np.diag([-1.0, -1.0, 1.0, 1.0]),
                  source_dtype=np.dtype(np.int16))


def fake_subject(i: int, grade: str = "HGG", tag: str = "") -> VolumeSubject:
    sid = f"BraTS20_Training_{tag}{i:03d}"
    folder = Path("/nonexistent") / sid
    return VolumeSubject(sid, folder, ("t1", "t2", "t1ce", "flair"),
                         tuple(folder / f"{sid}_{c}.nii.gz" for c in ("t1", "t2", "t1ce", "flair")),
                         folder / f"{sid}_seg.nii.gz", grade, loader=fake_volume)


def fake_slice(sample: SliceSample):
    rng = np.random.default_rng(int(sample.sample_id))
    image = rng.integers(0, 256, size=(1, 20, 20)).astype(np.float32)
    mask = np.zeros((20, 20), np.uint8)
    mask[5:10, 5:12] = 1
    return image, mask


def fake_samples(n_patients: int = 6, per_patient: int = 3) -> list[SliceSample]:
    out = []
    for p in range(n_patients):
        for s in range(per_patient):
            sid = p * per_patient + s + 1
            out.append(SliceSample(f"P{p:02d}", str(sid), 1 + p % 3,
                                   ["meningioma", "glioma", "pituitary"][p % 3], 1 + p % 4,
                                   Path(f"/nonexistent/{sid}.jpg"), None, loader=fake_slice))
    return out


def fake_store(root: Path, n_subjects: int = 10, size: int = 16, n_folds: int = 2):
    """A slice store of ``n_subjects`` fake subjects (odd: HGG, even: LGG; 8 slices each) at
    ``size`` and its patient-level split; returns ``(store folder, split path)``."""
    from gpcore.data.splits import patient_split, save_split
    from gpcore.data.store import build_store

    subjects = [fake_subject(i, "HGG" if i % 2 else "LGG") for i in range(1, n_subjects + 1)]
    store = build_store(subjects, Path(root) / "store", source={"kind": "test"}, size=size,
                        workers=1, progress=False)
    split = save_split(patient_split(store.index, n_folds=n_folds, val_fraction=0.25, seed=0),
                       Path(root) / "split.csv")
    return Path(root) / "store", split
