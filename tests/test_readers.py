"""Dataset readers: BraTS 2020 folders, Figshare v7.3 .mat files, manifest CSVs.

Synthetic data is tiny (12 × 10 × 6 volumes, 4 × 6 slices) so the whole file runs in seconds.
"""
import os
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from gpcore.data import BRATS_CONTRASTS, DataError
from gpcore.data.brats import discover_brats, load_brats_volume, verify_subjects
from gpcore.data.figshare import CLASS_NAMES, discover_figshare_mat, read_figshare_mat
from gpcore.data.manifest import read_manifest

SHAPE = (12, 10, 6)
GRADES = {"BraTS20_Training_001": "HGG", "BraTS20_Training_002": "LGG",
          "BraTS20_Training_003": "HGG", "BraTS20_Training_355": "LGG"}
FIGSHARE = Path(os.environ.get("GPCORE_SHARED", Path(__file__).resolve().parents[2] / "shared")) \
    / "data" / "figshare-cheng"


# --------------------------------------------------------------------------------------------
# BraTS helpers
# --------------------------------------------------------------------------------------------
def _nii(path, data, affine=None, dtype=np.int16):
    nib.save(nib.Nifti1Image(np.asarray(data).astype(dtype), np.eye(4) if affine is None
                             else affine), str(path))


def _contrast(k, rng, shape=SHAPE):
    """Contrast ``k`` of BRATS_CONTRASTS: values 100(k+1) … 100(k+1)+9, to check channel order."""
    return 100 * (k + 1) + rng.integers(0, 10, shape)


def _seg(shape=SHAPE):
    seg = np.zeros(shape, np.uint8)
    seg[3:6, 3:6, 2] = 1
    seg[6:8, 3:6, 2:4] = 2
    seg[4, 4, 3] = 4
    return seg


def _subject(data_dir, sid, rng, seg_name="{sid}_seg.nii.gz", seg=True):
    folder = data_dir / sid
    folder.mkdir(parents=True)
    for k, c in enumerate(BRATS_CONTRASTS):
        _nii(folder / f"{sid}_{c}.nii.gz", _contrast(k, rng))
    if seg:
        _nii(folder / seg_name.format(sid=sid), _seg(), dtype=np.uint8)
    return folder


@pytest.fixture
def brats(tmp_path):
    """A training folder inside ``tmp_path``; name_mapping.csv rows in reverse folder order."""
    rng = np.random.default_rng(0)
    data = tmp_path / "MICCAI_BraTS2020_TrainingData"
    for sid in ("BraTS20_Training_001", "BraTS20_Training_002", "BraTS20_Training_003"):
        _subject(data, sid, rng)
    # subject 355 of the release: irregular segmentation name
    _subject(data, "BraTS20_Training_355", rng, seg_name="W39_1998.09.19_Segm.nii")
    rows = [f"{g},BraTS_2020_Training_x,{sid}" for sid, g in reversed(GRADES.items())]
    (data / "name_mapping.csv").write_text(
        "Grade,BraTS_2019_subject_ID,BraTS_2020_subject_ID\n" + "\n".join(rows) + "\n")
    return data


def _folder(data, n):
    return data / f"BraTS20_Training_{n:03d}"


def _file(data, n, suffix):
    return _folder(data, n) / f"BraTS20_Training_{n:03d}_{suffix}.nii.gz"


# --------------------------------------------------------------------------------------------
# BraTS: good data
# --------------------------------------------------------------------------------------------
def test_brats_discovery_grade_join_and_irregular_seg(brats):
    for root in (brats, brats.parent):  # the data folder itself or the folder holding it
        subjects = discover_brats(root)
        assert [s.subject_id for s in subjects] == sorted(GRADES)
        # name_mapping.csv lists the subjects in reverse order: a row-order join would mix grades
        assert {s.subject_id: s.grade for s in subjects} == GRADES
    s355 = subjects[-1]
    assert s355.seg_path.name == "W39_1998.09.19_Segm.nii"
    assert subjects[0].seg_path.name == "BraTS20_Training_001_seg.nii.gz"
    assert [p.name for p in subjects[0].image_paths] == [
        f"BraTS20_Training_001_{c}.nii.gz" for c in BRATS_CONTRASTS]
    assert s355.load().seg.max() == 4


def test_brats_load_default_channel_order(brats):
    vol = discover_brats(brats)[0].load()
    assert vol.image.shape == (4, *SHAPE) and vol.image.dtype == np.float32
    # channel k holds contrast k of (t1, t2, t1ce, flair): values 100(k+1) + 0…9
    assert [int(vol.image[k].min() // 100) for k in range(4)] == [1, 2, 3, 4]
    assert vol.seg.dtype == np.uint8 and vol.seg.shape == SHAPE
    assert set(np.unique(vol.seg)) == {0, 1, 2, 4}
    assert vol.source_dtype == np.int16
    np.testing.assert_allclose(vol.affine, np.eye(4))


def test_brats_custom_channel_order_and_unknown_contrast(brats):
    subject = discover_brats(brats, contrasts=("flair", "t1"))[1]
    assert subject.contrasts == ("flair", "t1")
    vol = subject.load()
    assert vol.image.shape == (2, *SHAPE)
    assert [int(vol.image[k].min() // 100) for k in range(2)] == [4, 1]
    with pytest.raises(DataError, match="unknown contrast 't1c'"):
        discover_brats(brats, contrasts=("t1", "t1c"))


def test_brats_validation_folder(tmp_path):
    rng = np.random.default_rng(1)
    data = tmp_path / "MICCAI_BraTS2020_ValidationData"
    for n in (2, 1):
        _subject(data, f"BraTS20_Validation_{n:03d}", rng, seg=False)
    (data / "name_mapping_validation.csv").write_text(
        "BraTS_2017_subject_ID,BraTS_2018_subject_ID,BraTS_2019_subject_ID,BraTS_2020_subject_ID\n"
        ",,,BraTS20_Validation_001\n,,,BraTS20_Validation_002\n")
    subjects = discover_brats(tmp_path)
    assert [s.subject_id for s in subjects] == ["BraTS20_Validation_001", "BraTS20_Validation_002"]
    assert all(s.grade is None and s.seg_path is None for s in subjects)
    vol = subjects[0].load()
    assert vol.seg is None and vol.image.shape == (4, *SHAPE)


def test_brats_irregular_seg_none_or_ambiguous(brats):
    folder = _folder(brats, 355)
    (folder / "W39_1998.09.19_Segm.nii").rename(folder / "other_seg_copy.nii")
    _nii(folder / "W39_Segm.nii", _seg(), dtype=np.uint8)
    with pytest.raises(DataError, match="several candidates.*W39_Segm.nii"):
        discover_brats(brats)
    for p in folder.glob("*eg*.nii"):
        p.unlink()
    with pytest.raises(DataError, match="BraTS20_Training_355_seg.nii.gz: segmentation missing"):
        discover_brats(brats)


# --------------------------------------------------------------------------------------------
# BraTS: bad inputs, each with on_error="stop" and "skip"
# --------------------------------------------------------------------------------------------
def _truncate(data):
    path = _file(data, 2, "t2")
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])
    return path.name, "truncated or corrupt"


def _truncate_data(data):
    """A bigger file cut in half: the header still reads, the voxels end early (EOFError)."""
    path = _file(data, 2, "t1")
    _nii(path, np.random.default_rng(7).integers(1, 1000, (40, 40, 30)))
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])
    return path.name, "truncated or corrupt NIfTI (EOFError"


def _missing_contrast(data):
    _file(data, 2, "t1ce").unlink()
    return "BraTS20_Training_002_t1ce.nii.gz", "missing"


def _shape(data):
    _nii(_file(data, 2, "flair"), np.ones((12, 10, 5)))
    return "BraTS20_Training_002_flair.nii.gz", "shape (12, 10, 5) differs"


def _seg_shape(data):
    _nii(_file(data, 2, "seg"), np.zeros((12, 9, 6)), dtype=np.uint8)
    return "BraTS20_Training_002_seg.nii.gz", "shape (12, 9, 6) differs"


def _affine(data):
    affine = np.diag([2.0, 1.0, 1.0, 1.0])
    _nii(_file(data, 2, "t1ce"), _contrast(2, np.random.default_rng(5)), affine=affine)
    return "BraTS20_Training_002_t1ce.nii.gz", "affine differs"


def _label3(data):
    seg = _seg()
    seg[0, 0, 0] = 3
    _nii(_file(data, 2, "seg"), seg, dtype=np.uint8)
    return "BraTS20_Training_002_seg.nii.gz", "unexpected label 3; BraTS 2020 uses 0, 1, 2, 4"


def _non_integral_seg(data):
    seg = _seg().astype(np.float32)
    seg[0, 0, 0] = 1.5
    _nii(_file(data, 2, "seg"), seg, dtype=np.float32)
    return "BraTS20_Training_002_seg.nii.gz", "non-integral"


def _nan(data):
    vol = _contrast(3, np.random.default_rng(6)).astype(np.float32)
    vol[1, 2, 3] = np.nan
    _nii(_file(data, 2, "flair"), vol, dtype=np.float32)
    return "BraTS20_Training_002_flair.nii.gz", "1 NaN/Inf voxels"


def _all_zero(data):
    _nii(_file(data, 2, "t2"), np.zeros(SHAPE))
    return "BraTS20_Training_002_t2.nii.gz", "all voxels are zero"


def _not_in_mapping(data):
    csv = data / "name_mapping.csv"
    csv.write_text("\n".join(line for line in csv.read_text().splitlines()
                             if "Training_002" not in line) + "\n")
    return "name_mapping.csv", "subject BraTS20_Training_002 not listed"


def _bad_grade(data):
    csv = data / "name_mapping.csv"
    csv.write_text(csv.read_text().replace("LGG,BraTS_2020_Training_x,BraTS20_Training_002",
                                           "GBM,BraTS_2020_Training_x,BraTS20_Training_002"))
    return "name_mapping.csv", "Grade 'GBM'"


def _two_d(data):
    """A 2D NIfTI where the 3D contrast volume belongs (issue 15)."""
    _nii(_file(data, 2, "t1"), np.ones((12, 10)))
    return "BraTS20_Training_002_t1.nii.gz", "expected a 3D volume, got shape (12, 10)"


def _empty_file(data):
    """A zero-byte file (an interrupted copy)."""
    _file(data, 2, "flair").write_bytes(b"")
    return "BraTS20_Training_002_flair.nii.gz", "truncated or corrupt"


def _not_an_image(data):
    """Some other file under the contrast's name."""
    _file(data, 2, "t2").write_bytes(b"subject,grade\nBraTS20_Training_002,HGG\n" * 20)
    return "BraTS20_Training_002_t2.nii.gz", "truncated or corrupt"


AT_DISCOVERY = [_missing_contrast, _not_in_mapping, _bad_grade]
AT_LOAD = [_truncate, _truncate_data, _shape, _seg_shape, _affine, _label3, _non_integral_seg,
           _nan, _all_zero, _two_d, _empty_file, _not_an_image]


@pytest.mark.parametrize("damage", AT_DISCOVERY + AT_LOAD, ids=lambda f: f.__name__.strip("_"))
def test_brats_bad_input_stop(brats, damage):
    name, problem = damage(brats)
    with pytest.raises(DataError) as info:
        for subject in discover_brats(brats):  # discovery problems raise here,
            load_brats_volume(subject)         # voxel problems on load
    assert name in str(info.value) and problem in str(info.value)
    if damage in (_truncate, _truncate_data):
        assert "re-download or re-extract the subject" in str(info.value)


@pytest.mark.parametrize("damage", AT_DISCOVERY + AT_LOAD, ids=lambda f: f.__name__.strip("_"))
def test_brats_bad_input_skip(brats, damage):
    name, problem = damage(brats)
    skipped = []
    subjects = discover_brats(brats, on_error="skip", skipped=skipped)
    if damage in AT_LOAD:  # discovery reads no voxels; verify_subjects loads each once
        assert len(subjects) == 4 and not skipped
        subjects = verify_subjects(subjects, on_error="skip", skipped=skipped)
    assert [s.subject_id for s in subjects] == [
        "BraTS20_Training_001", "BraTS20_Training_003", "BraTS20_Training_355"]
    assert len(skipped) == 1 and isinstance(skipped[0], DataError)
    assert name in str(skipped[0]) and problem in str(skipped[0])


def test_brats_missing_name_mapping(brats):
    (brats / "name_mapping.csv").unlink()
    with pytest.raises(DataError, match="name_mapping.csv: missing"):
        discover_brats(brats)
    skipped = []
    assert discover_brats(brats, on_error="skip", skipped=skipped) == []
    assert len(skipped) == 1 and "name_mapping.csv" in str(skipped[0])


def test_brats_on_error_checked(brats):
    with pytest.raises(ValueError, match="on_error"):
        discover_brats(brats, on_error="ignore")


# --------------------------------------------------------------------------------------------
# Figshare .mat (v7.3 = HDF5), written the way MATLAB stores them
# --------------------------------------------------------------------------------------------
def _matlab(group, name, array, matlab_class):
    """Store a MATLAB array as v7.3 does: axes reversed (column-major)."""
    dset = group.create_dataset(name, data=np.asarray(array).T)
    dset.attrs["MATLAB_class"] = np.bytes_(matlab_class)
    return dset


def _write_mat(path, image, mask, label, pid, border, pid_row=True, skip=()):
    with h5py.File(path, "w", userblock_size=512) as f:  # MATLAB files have a 512-byte header
        g = f.create_group("cjdata")
        g.attrs["MATLAB_class"] = np.bytes_("struct")
        codes = np.array([[ord(c) for c in pid]], np.uint16)  # a 1×n MATLAB char row
        fields = {"image": (image.astype(np.int16), "int16"),
                  "tumorMask": (mask.astype(np.uint8), "logical"),
                  "label": (np.array([[float(label)]]), "double"),
                  "PID": (codes if pid_row else codes.T, "char"),
                  "tumorBorder": (np.asarray(border, float).reshape(1, -1), "double")}
        for name, (arr, cls) in fields.items():
            if name not in skip:
                _matlab(g, name, arr, cls)


def _slice(seed):
    """A non-symmetric 4 × 6 slice (MATLAB orientation) and its mask."""
    image = np.arange(24).reshape(4, 6) + 100 * seed
    mask = np.zeros((4, 6), np.uint8)
    mask[1:3, 0:2] = 1
    return image, mask


@pytest.fixture
def figshare(tmp_path):
    folder = tmp_path / "figshare"
    folder.mkdir()
    pids = {1: "100360", 2: "MR040237", 10: "100360"}
    for n, pid in pids.items():
        image, mask = _slice(n)
        _write_mat(folder / f"{n}.mat", image, mask, label=(n % 3) + 1, pid=pid,
                   border=[[1.5, 2.0], [3.0, 4.5], [5.0, 6.0]], pid_row=n != 2)
    folds = np.array([[3, 1, 2, 2, 2, 2, 2, 2, 2, 5]], float)  # fold of file n at n - 1
    with h5py.File(folder / "cvind.mat", "w", userblock_size=512) as f:
        _matlab(f, "cvind", folds.T, "double")  # a MATLAB N×1 column
    return folder


def test_figshare_read_orientation_pid_label(figshare):
    data = read_figshare_mat(figshare / "2.mat")
    image, mask = _slice(2)
    assert data["image"].dtype == np.float32 and data["image"].shape == (4, 6)
    np.testing.assert_array_equal(data["image"], image)  # MATLAB orientation, not transposed
    np.testing.assert_array_equal(data["mask"], mask)
    assert data["mask"].dtype == np.uint8
    assert data["pid"] == "MR040237"  # stored as an n×1 char array in this file
    assert read_figshare_mat(figshare / "1.mat")["pid"] == "100360"  # 1×n here
    assert data["label"] == 3 and isinstance(data["label"], int)
    np.testing.assert_array_equal(data["border"], [[1.5, 2.0], [3.0, 4.5], [5.0, 6.0]])


def test_figshare_discovery_folds_and_lazy_load(figshare):
    samples = discover_figshare_mat(figshare)
    assert [s.sample_id for s in samples] == ["1", "2", "10"]  # numeric, not string order
    assert [s.fold for s in samples] == [3, 1, 5]
    assert [s.label for s in samples] == [2, 3, 2]
    assert [s.label_name for s in samples] == [CLASS_NAMES[2], "pituitary", "glioma"]
    assert [s.patient_id for s in samples] == ["100360", "MR040237", "100360"]
    image, mask = samples[1].load()
    assert image.shape == (1, 4, 6) and image.dtype == np.float32
    np.testing.assert_array_equal(image[0], _slice(2)[0])
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}


def test_figshare_files_in_the_release_part_folders(figshare):
    part = figshare / "brainTumorDataPublic_1-766"
    part.mkdir()
    (figshare / "2.mat").rename(part / "2.mat")
    assert [s.sample_id for s in discover_figshare_mat(figshare)] == ["1", "2", "10"]
    (part / "10.mat").write_bytes((figshare / "10.mat").read_bytes())
    with pytest.raises(DataError, match="10.mat found more than once"):
        discover_figshare_mat(figshare)


def test_figshare_without_cvind_and_v5_cvind(figshare, tmp_path):
    from scipy.io import savemat

    (figshare / "cvind.mat").rename(tmp_path / "elsewhere.mat")
    assert [s.fold for s in discover_figshare_mat(figshare)] == [None] * 3
    moved = discover_figshare_mat(figshare, tmp_path / "elsewhere.mat")
    assert [s.fold for s in moved] == [3, 1, 5]
    savemat(tmp_path / "v5.mat", {"cvind": np.array([[4, 4, 4, 4, 4, 4, 4, 4, 4, 2]]).T})
    assert [s.fold for s in discover_figshare_mat(figshare, tmp_path / "v5.mat")] == [4, 4, 2]


def test_figshare_bad_files(figshare):
    (figshare / "2.mat").write_bytes(b"MATLAB 7.3 MAT-file" + bytes(100))  # corrupt
    image, mask = _slice(3)
    _write_mat(figshare / "3.mat", image, mask, 1, "7", [[1, 1]], skip=("tumorMask",))
    with pytest.raises(DataError, match=r"2\.mat: not a readable MATLAB v7.3"):
        discover_figshare_mat(figshare)
    skipped = []
    samples = discover_figshare_mat(figshare, on_error="skip", skipped=skipped)
    assert [s.sample_id for s in samples] == ["1", "10"]
    assert len(skipped) == 2 and "3.mat: field cjdata.tumorMask missing" in str(skipped[1])
    with pytest.raises(DataError, match=r"3\.mat: field cjdata.tumorMask missing"):
        read_figshare_mat(figshare / "3.mat")


# --------------------------------------------------------------------------------------------
# manifest CSV
# --------------------------------------------------------------------------------------------
@pytest.fixture
def manifest(tmp_path):
    root = tmp_path / "ds"
    (root / "img").mkdir(parents=True)
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    Image.fromarray(grey).save(root / "img/a.png")
    Image.fromarray(np.array([[0, 100, 128, 255, 200]] * 4, np.uint8)).save(root / "img/a_m.png")
    np.save(root / "img/b.npy", np.arange(20, dtype=np.float64).reshape(4, 5))
    np.save(root / "img/b_m.npy", (np.arange(20).reshape(4, 5) % 3).astype(np.int16))
    _nii(root / "img/c.nii.gz", np.arange(20).reshape(4, 5, 1), dtype=np.float32)
    _nii(root / "img/c_m.nii.gz", np.eye(4, 5), dtype=np.uint8)
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 255  # pure red -> luma 76
    Image.fromarray(rgb).save(root / "img/d.png")
    Image.fromarray(np.eye(4, 5, dtype=np.uint8)).save(root / "img/d_m.png")  # lossless 0/1
    Image.fromarray(grey).save(tmp_path / "outside.png")
    (root / "img/link.png").symlink_to(tmp_path / "outside.png")
    (root / "manifest.csv").write_text(
        "image,mask,label,patient_id,fold\n"
        "img/a.png,img/a_m.png,1,p1,2\n"
        "img/b.npy,img/b_m.npy,2,p1,2\n"
        "img/c.nii.gz,img/c_m.nii.gz,3,p2,\n"
        "img/d.png,img/d_m.png,3,p2,1\n")
    return root


def test_manifest_formats(manifest):
    samples = read_manifest(manifest / "manifest.csv")
    assert [s.sample_id for s in samples] == ["1", "2", "3", "4"]  # default: row number
    assert [s.label_name for s in samples] == ["1", "2", "3", "3"]
    assert [s.fold for s in samples] == [2, 2, None, 1]
    assert [s.patient_id for s in samples] == ["p1", "p1", "p2", "p2"]
    loaded = [s.load() for s in samples]
    for image, mask in loaded:
        assert image.shape == (1, 4, 5) and image.dtype == np.float32
        assert mask.shape == (4, 5) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    np.testing.assert_array_equal(loaded[0][0][0], np.arange(20).reshape(4, 5) * 10)
    np.testing.assert_array_equal(loaded[0][1], [[0, 0, 1, 1, 1]] * 4)  # 8-bit: > 127
    np.testing.assert_array_equal(loaded[1][1], np.arange(20).reshape(4, 5) % 3 > 0)  # npy: > 0
    np.testing.assert_array_equal(loaded[2][0][0], np.arange(20).reshape(4, 5))  # singleton z
    np.testing.assert_array_equal(loaded[2][1], np.eye(4, 5))
    np.testing.assert_array_equal(loaded[3][0], np.full((1, 4, 5), 76.0))  # RGB -> grey
    np.testing.assert_array_equal(loaded[3][1], np.eye(4, 5))  # lossless 0/1 PNG kept


def test_manifest_npy_channels_and_columns(manifest):
    np.save(manifest / "img/e.npy", np.ones((3, 4, 5), np.float32))
    (manifest / "other.csv").write_text("file,seg,cls,subject,id,name\n"
                                        "img/e.npy,img/b_m.npy,7,s9,x1,thing\n")
    cols = {"image": "file", "mask": "seg", "label": "cls", "patient_id": "subject",
            "sample_id": "id", "label_name": "name"}
    (s,) = read_manifest(manifest / "other.csv", columns=cols)
    assert (s.sample_id, s.label, s.label_name, s.patient_id) == ("x1", 7, "thing", "s9")
    assert s.fold is None
    assert s.load()[0].shape == (3, 4, 5)
    with pytest.raises(DataError, match="missing column.*found: file, seg, cls, subject, id, name"):
        read_manifest(manifest / "other.csv")


@pytest.mark.parametrize("path, problem", [
    ("../outside.png", "points outside the dataset root"),
    ("img/link.png", "points outside the dataset root"),  # a symlink out of the root
    ("img/nope.png", "not found"),
])
def test_manifest_bad_rows(manifest, path, problem):
    csv = manifest / "manifest.csv"
    csv.write_text(csv.read_text() + f"{path},img/a_m.png,1,p3,1\n")
    with pytest.raises(DataError) as info:
        read_manifest(csv)
    msg = str(info.value)
    assert "manifest.csv" in msg and "row 5" in msg and path in msg and problem in msg
    skipped = []
    assert len(read_manifest(csv, on_error="skip", skipped=skipped)) == 4
    assert len(skipped) == 1 and problem in str(skipped[0])


def test_manifest_unreadable_image_and_shape_mismatch(manifest):
    (manifest / "img/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30))
    np.save(manifest / "img/small_m.npy", np.zeros((3, 5)))
    (manifest / "bad.csv").write_text("image,mask,label,patient_id\n"
                                      "img/broken.png,img/a_m.png,1,p\n"
                                      "img/a.png,img/small_m.npy,1,p\n")
    broken, mismatched = read_manifest(manifest / "bad.csv")
    with pytest.raises(DataError, match=r"broken\.png: unreadable"):
        broken.load()
    with pytest.raises(DataError, match=r"small_m\.npy: mask shape \(3, 5\) differs"):
        mismatched.load()


def test_manifest_real_figshare_copy():
    csv = FIGSHARE / "manifest.csv"
    if not csv.is_file():
        pytest.skip(f"needs the Figshare JPEG copy at {FIGSHARE} (set GPCORE_SHARED)")
    samples = read_manifest(csv)
    assert len(samples) == 2421
    assert len({s.patient_id for s in samples}) == 186
    assert {s.label for s in samples} == {1, 2, 3}
    assert {s.fold for s in samples} == {1, 2, 3, 4}
    assert {s.label_name for s in samples} == {"meningioma", "glioma", "pituitary"}
    for s in samples[:: len(samples) // 4]:
        image, mask = s.load()
        assert image.ndim == 3 and image.shape[0] == 1 and image.dtype == np.float32
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
        assert mask.shape == image.shape[1:]


# --------------------------------------------------------------------------------------------
# the same bad inputs through the whole preprocessing step (reader + slice store)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", AT_DISCOVERY + AT_LOAD, ids=lambda f: f.__name__.strip("_"))
def test_preprocess_stops_or_skips_and_reports(brats, tmp_path, damage):
    import pandas as pd

    from gpcore.data.prepare import preprocess

    name, problem = damage(brats)
    with pytest.raises(DataError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        preprocess("brats", brats, tmp_path / "stop", workers=1, progress=False)
    assert not (tmp_path / "stop" / "store.json").exists()
    store = preprocess("brats", brats, tmp_path / "skip", workers=1, progress=False,
                       on_error="skip")
    assert sorted(store.index.patient_id.unique()) == [
        "BraTS20_Training_001", "BraTS20_Training_003", "BraTS20_Training_355"]
    report = pd.read_csv(tmp_path / "skip" / "skipped.csv")
    assert len(report) == 1 and name in report.problem[0] and problem in report.problem[0]
