"""BraTS 2020 reader: discover subject folders cheaply, read and check one subject's voxels.

Layout (training; validation has no ``_seg`` file, no grade and ``name_mapping_validation.csv``)::

    MICCAI_BraTS2020_TrainingData/
        name_mapping.csv                       # columns Grade, ..., BraTS_2020_subject_ID
        BraTS20_Training_001/
            BraTS20_Training_001_{t1,t2,t1ce,flair,seg}.nii.gz

Unlike the reference (D16), file names are built from the subject ID (no ``str.replace`` on a
path), the grade is joined by subject ID (not by row order), and geometry and labels are checked.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import DataError, check_on_error, report
from .records import BRATS_CONTRASTS, BRATS_LABELS, Volume, VolumeSubject

MAPPING = "name_mapping.csv"
MAPPING_VALIDATION = "name_mapping_validation.csv"
ID_COLUMN = "BraTS_2020_subject_ID"
GRADES = ("HGG", "LGG")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
REDOWNLOAD = "re-download or re-extract the subject"
_AFFINE_ATOL = 1e-3


# --------------------------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------------------------
def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES)


def _find_data_dir(root: Path) -> Path:
    """``root`` itself, or the single ``MICCAI_BraTS*`` folder inside it."""
    if not root.is_dir():
        raise DataError(root, "folder not found",
                        "pass the MICCAI_BraTS2020_TrainingData folder or the folder holding it")
    if root.name.startswith("MICCAI_BraTS"):
        return root
    inner = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("MICCAI_BraTS"))
    if len(inner) > 1:
        raise DataError(root, f"several BraTS folders inside: {', '.join(p.name for p in inner)}",
                        "pass the one to read")
    return inner[0] if inner else root


def _is_validation(data_dir: Path) -> bool:
    if "validation" in data_dir.name.lower():
        return True
    return not (data_dir / MAPPING).is_file() and (data_dir / MAPPING_VALIDATION).is_file()


def _read_grades(data_dir: Path) -> dict[str, str]:
    """``subject ID -> Grade`` from ``name_mapping.csv`` (raw strings, validated per subject)."""
    import pandas as pd

    path = data_dir / MAPPING
    if not path.is_file():
        raise DataError(path, "missing (the training data's grade table)",
                        "copy name_mapping.csv from the BraTS 2020 download into the data folder")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot be read as CSV ({exc})", "re-download name_mapping.csv")
    missing = [c for c in (ID_COLUMN, "Grade") if c not in table.columns]
    if missing:
        raise DataError(path, f"no column {', '.join(missing)} (found: {', '.join(table.columns)})",
                        "use the name_mapping.csv of the BraTS 2020 release")
    grades: dict[str, str] = {}
    for sid, grade in zip(table[ID_COLUMN].str.strip(), table["Grade"].str.strip()):
        if sid in grades and grades[sid] != grade:
            raise DataError(path, f"subject {sid} listed twice with grades {grades[sid]} and "
                            f"{grade}", "keep one row per subject")
        grades[sid] = grade
    return grades


def _find_file(folder: Path, subject_id: str, suffix: str) -> Path | None:
    """``{subject_id}_{suffix}.nii.gz`` or ``.nii`` in ``folder``, else None."""
    for ext in NIFTI_SUFFIXES:
        path = folder / f"{subject_id}_{suffix}{ext}"
        if path.is_file():
            return path
    return None


def _find_seg(folder: Path, subject_id: str, contrast_files: Sequence[Path]) -> Path:
    """The subject's segmentation; tolerates one irregular name (subject 355 of the release
    ships ``W39_1998.09.19_Segm.nii``)."""
    regular = _find_file(folder, subject_id, "seg")
    if regular is not None:
        return regular
    taken = {p.name for p in contrast_files}
    candidates = sorted(p for p in folder.iterdir()
                        if _is_nifti(p) and "seg" in p.name.lower() and p.name not in taken)
    if len(candidates) == 1:
        return candidates[0]
    expected = folder / f"{subject_id}_seg.nii.gz"
    if not candidates:
        raise DataError(expected, "segmentation missing (no NIfTI file with 'seg' in its name)",
                        REDOWNLOAD)
    raise DataError(expected, "segmentation missing and several candidates found: "
                    + ", ".join(p.name for p in candidates),
                    f"rename the right one to {expected.name}")


def _subject(folder: Path, contrasts: tuple[str, ...], validation: bool,
             grades: dict[str, str] | None, mapping: Path) -> VolumeSubject:
    subject_id = folder.name
    paths = []
    for contrast in contrasts:
        path = _find_file(folder, subject_id, contrast)
        if path is None:
            raise DataError(folder / f"{subject_id}_{contrast}.nii.gz",
                            f"missing ({contrast} contrast of {subject_id})", REDOWNLOAD)
        paths.append(path)
    if validation:
        return VolumeSubject(subject_id, folder, contrasts, tuple(paths), None, None,
                             loader=load_brats_volume)
    all_contrasts = [p for c in BRATS_CONTRASTS if (p := _find_file(folder, subject_id, c))]
    seg = _find_seg(folder, subject_id, all_contrasts)
    if subject_id not in grades:
        raise DataError(mapping, f"subject {subject_id} not listed in column {ID_COLUMN}",
                        "use the name_mapping.csv of the same BraTS release, or skip the subject")
    grade = grades[subject_id]
    if grade not in GRADES:
        raise DataError(mapping, f"subject {subject_id} has Grade {grade!r}, expected HGG or LGG",
                        "fix the Grade column")
    return VolumeSubject(subject_id, folder, contrasts, tuple(paths), seg, grade,
                         loader=load_brats_volume)


def _check_contrasts(contrasts: Sequence[str], root: Path) -> tuple[str, ...]:
    names = tuple(str(c).lower() for c in contrasts)
    unknown = [c for c in names if c not in BRATS_CONTRASTS]
    if unknown or not names or len(set(names)) != len(names):
        problem = (f"unknown contrast {', '.join(map(repr, unknown))}" if unknown
                   else f"contrasts {list(contrasts)!r} empty or repeated")
        raise DataError(root, problem, f"choose from {', '.join(BRATS_CONTRASTS)}, each once")
    return names


def discover_brats(root: str | os.PathLike, contrasts: Sequence[str] = BRATS_CONTRASTS,
                   on_error: str = "stop", skipped: list | None = None,
                   labelled: bool | None = None) -> list[VolumeSubject]:
    """Find the subjects of a BraTS 2020 training or validation folder; reads no voxels.

    Args:
        root: ``MICCAI_BraTS2020_TrainingData`` (or ``..._ValidationData``) or a folder holding
            exactly one such folder. A folder whose name contains "Validation", or that has only
            ``name_mapping_validation.csv``, is validation data (grade and seg ``None``).
        contrasts: channel order of ``Volume.image`` (default T1, T2, T1CE, FLAIR).
        on_error: ``"stop"`` raises the first :class:`DataError`; ``"skip"`` appends it to
            ``skipped`` and leaves the subject out.
        labelled: ``None`` (default) tells training from validation data as above; ``False``
            reads user data like validation data (contrasts only: no grade, no segmentation,
            no ``name_mapping.csv`` needed); ``True`` requires grades and segmentations.

    Returns the subjects sorted by subject ID (= folder name); ``subject.load()`` reads them.
    """
    check_on_error(on_error)
    root = Path(root)
    contrasts = _check_contrasts(contrasts, root)
    data_dir = _find_data_dir(root)
    folders = sorted((p for p in data_dir.iterdir()
                      if p.is_dir() and not p.name.startswith(".")
                      and any(_is_nifti(f) for f in p.iterdir())), key=lambda p: p.name)
    if not folders:
        raise DataError(data_dir, "no subject folders with NIfTI files found",
                        "pass the MICCAI_BraTS2020_TrainingData folder or the folder holding it")
    validation = _is_validation(data_dir) if labelled is None else not labelled
    grades = None
    if not validation:
        try:
            grades = _read_grades(data_dir)
        except DataError as err:
            report(err, on_error, skipped)  # no grades: no training subject is usable
            return []
    subjects = []
    for folder in folders:
        try:
            subjects.append(_subject(folder, contrasts, validation, grades, data_dir / MAPPING))
        except DataError as err:
            report(err, on_error, skipped)
    return subjects


# --------------------------------------------------------------------------------------------
# loading one subject
# --------------------------------------------------------------------------------------------
def open_nifti(path: Path, fix: str = REDOWNLOAD):
    """``(nibabel image, voxel array)``; a truncated or corrupt file raises :class:`DataError`
    naming it, with ``fix`` as the remedy."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)  # the header alone loads lazily: read now to check
    except (ImageFileError, gzip.BadGzipFile, EOFError, zlib.error, OSError, ValueError) as exc:
        detail = str(exc).replace(str(path), path.name)  # the path is already in front
        raise DataError(path, f"truncated or corrupt NIfTI ({type(exc).__name__}: {detail})",
                        fix) from exc
    return img, data


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    """``(array (X, Y, Z) as stored or scaled, affine (4, 4), on-disk dtype)``."""
    if not path.is_file():
        raise DataError(path, "file not found", REDOWNLOAD)
    img, data = open_nifti(path)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(path, f"expected a 3D volume, got shape {data.shape}", REDOWNLOAD)
    return data, np.asarray(img.affine, dtype=np.float64), img.get_data_dtype()


def _check_geometry(path: Path, shape, affine, ref_path: Path, ref_shape, ref_affine) -> None:
    if tuple(shape) != tuple(ref_shape):
        raise DataError(path, f"shape {tuple(shape)} differs from {ref_path.name} "
                        f"{tuple(ref_shape)}", f"{REDOWNLOAD}: all files of a subject share a grid")
    if not np.allclose(affine, ref_affine, atol=_AFFINE_ATOL):
        raise DataError(path, f"affine differs from {ref_path.name}",
                        f"{REDOWNLOAD}: all files of a subject share a grid (no re-registration "
                        "is done here)")


def _read_seg(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(seg (X, Y, Z) uint8 in {0, 1, 2, 4}, affine)``."""
    raw, affine, _ = _read_nifti(path)
    if raw.dtype.kind == "f":
        if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
            raise DataError(path, "non-integral label values",
                            f"{REDOWNLOAD}; BraTS 2020 uses 0, 1, 2, 4")
    elif raw.dtype.kind not in "iub":
        raise DataError(path, f"label dtype {raw.dtype} is not numeric", REDOWNLOAD)
    lo, hi = raw.min(), raw.max()
    if lo < 0 or hi > 255:
        bad = lo if lo < 0 else hi
        raise DataError(path, f"unexpected label {int(bad)}", "BraTS 2020 uses 0, 1, 2, 4")
    seg = raw.astype(np.uint8)
    present = np.flatnonzero(np.bincount(seg.ravel(), minlength=256))  # fast np.unique
    bad = sorted(set(present.tolist()) - BRATS_LABELS)
    if bad:
        raise DataError(path, f"unexpected label {', '.join(map(str, bad))}",
                        "BraTS 2020 uses 0, 1, 2, 4")
    return seg, affine


def load_brats_volume(subject: VolumeSubject) -> Volume:
    """Read and check one subject: ``image (C, X, Y, Z)`` float32 in ``subject.contrasts``
    order, ``seg (X, Y, Z)`` uint8 (``None`` without a seg path), the first contrast's affine,
    and ``source_dtype`` = the first contrast's on-disk dtype. Raises :class:`DataError`."""
    image = None
    ref = None  # (path, shape, affine) of the first contrast
    for c, path in enumerate(subject.image_paths):
        data, affine, dtype = _read_nifti(Path(path))
        if ref is None:
            ref = (Path(path), data.shape, affine)
            source_dtype = np.dtype(dtype)
            image = np.empty((len(subject.image_paths), *data.shape), np.float32)
        else:
            _check_geometry(Path(path), data.shape, affine, *ref)
        image[c] = data  # cast in place: one float32 copy of the subject in memory
        if not np.all(np.isfinite(image[c])):
            n = int(np.size(image[c]) - np.count_nonzero(np.isfinite(image[c])))
            raise DataError(path, f"{n} NaN/Inf voxels", REDOWNLOAD)
        if not image[c].any():
            raise DataError(path, "all voxels are zero (empty contrast)", REDOWNLOAD)
    seg = None
    if subject.seg_path is not None:
        seg, affine = _read_seg(Path(subject.seg_path))
        _check_geometry(Path(subject.seg_path), seg.shape, affine, *ref)
    return Volume(image=image, seg=seg, affine=ref[2], source_dtype=source_dtype)


def verify_subjects(items: Sequence, on_error: str = "stop", skipped: list | None = None) -> list:
    """Load every subject (or slice sample) once and return those that load cleanly.

    An optional full check before a long build: discovery reads no voxels, so corrupt files,
    geometry and label problems surface only on ``load()``. ``on_error`` as in
    :func:`discover_brats`. Memory: one subject at a time.
    """
    check_on_error(on_error)
    good = []
    for item in items:
        try:
            item.load()
        except DataError as err:
            report(err, on_error, skipped)
        else:
            good.append(item)
    return good
