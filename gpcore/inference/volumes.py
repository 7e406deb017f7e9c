"""MRI volumes for ``gpcore segment``: finding the inputs (BraTS-like subject folders or NIfTI
volumes), reading them, the reorientation to the training data's voxel axes and back, and
writing results in the input's own geometry."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.errors import DataError
from ..data.records import BRATS_CONTRASTS

NIFTI_SUFFIXES = (".nii.gz", ".nii")
INPUT_HELP = ("pass a folder of subject folders (<id>/<id>_t1.nii.gz, ...), one subject folder, "
              "a NIfTI volume, or a folder of NIfTI volumes")


@dataclass(frozen=True)
class SegmentInput:
    """One subject to segment: a BraTS-like folder (``subject`` set) or a single volume."""

    subject_id: str
    paths: tuple[Path, ...]
    subject: object = None  # a VolumeSubject for folder inputs


# --------------------------------------------------------------------------------------------
# discovery and loading
# --------------------------------------------------------------------------------------------
def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def discover_inputs(inputs: str | os.PathLike, contrasts: Sequence[str] = BRATS_CONTRASTS,
                    on_error: str = "stop", skipped: list | None = None) -> list[SegmentInput]:
    """The subjects in ``inputs`` (see the module docstring); reads no voxels."""
    from ..data.brats import _find_file, discover_brats, load_brats_volume
    from ..data.records import VolumeSubject

    root = Path(inputs)
    if _is_nifti(root):
        return [SegmentInput(_stem(root), (root,))]
    if not root.is_dir():
        raise DataError(root, "not found" if not root.exists() else "not a NIfTI file",
                        INPUT_HELP)
    entries = sorted(root.iterdir(), key=lambda p: p.name)
    if any(p.is_dir() and not p.name.startswith(".") and any(_is_nifti(f) for f in p.iterdir())
           for p in entries):
        subjects = discover_brats(root, contrasts, on_error=on_error, skipped=skipped,
                                  labelled=False)
        return [SegmentInput(s.subject_id, tuple(s.image_paths), s) for s in subjects]
    files = [p for p in entries if _is_nifti(p) and not p.name.startswith(".")]
    if not files:
        raise DataError(root, "no NIfTI files or subject folders found", INPUT_HELP)
    contrasts = tuple(c.lower() for c in contrasts)
    paths = [_find_file(root, root.name, c) for c in contrasts]
    if all(paths):  # one BraTS-like subject folder
        subject = VolumeSubject(root.name, root, contrasts, tuple(paths), None, None,
                                loader=load_brats_volume)
        return [SegmentInput(root.name, tuple(paths), subject)]
    ids = [_stem(p) for p in files]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise DataError(root, f"several files for volume {dupes[0]} (.nii and .nii.gz?)",
                        "keep one file per volume")
    return [SegmentInput(i, (p,)) for i, p in zip(ids, files)]


def _read_volume(path: Path):
    """``(image (C, X, Y, Z) float32, nibabel image)`` of a single 3D or 4D NIfTI volume."""
    from ..data.brats import open_nifti

    img, data = open_nifti(path, "re-export or re-copy the file")
    if data.ndim == 5 and data.shape[3] == 1:  # NIfTI vector layout (X, Y, Z, 1, C)
        data = data[:, :, :, 0]
    if data.ndim == 3:
        image = data[None].astype(np.float32)
    elif data.ndim == 4:
        image = np.moveaxis(data, -1, 0).astype(np.float32)
    else:
        raise DataError(path, f"expected a 3D volume or a 4D (X, Y, Z, contrasts) volume, got "
                        f"shape {data.shape}", "stack the contrasts along the 4th axis")
    if not np.all(np.isfinite(image)):
        n = int(image.size - np.count_nonzero(np.isfinite(image)))
        raise DataError(path, f"{n} NaN/Inf voxels", "replace them (e.g. by 0) and retry")
    for c in range(image.shape[0]):
        if not image[c].any():
            raise DataError(path, f"contrast {c} is all zero", "check the export")
    return image, img


#: the voxel axes the models were trained in: BraTS 2020 as nibabel reads it (and the phantom),
#: axial slices along the last axis
TRAINING_AXCODES = ("L", "P", "S")


def to_training_orientation(image: np.ndarray, affine: np.ndarray):
    """``image (C, X, Y, Z)`` in the voxel order of ``affine`` -> ``(image in the training
    voxel order (C, X', Y', Z'), the orientation that takes a volume back)``: a user volume in
    RAS, or stored sagittal-first, is segmented in the axes the model saw (only flips and axis
    permutations, no resampling). Inverse: ``apply_orientation(volume, back)``."""
    from nibabel import orientations as nio

    src = nio.io_orientation(affine)
    if np.isnan(src).any():
        raise ValueError("the volume's affine has no clear axis directions (oblique by 45°?); "
                         "reslice it to an axial orientation first")
    target = nio.axcodes2ornt(TRAINING_AXCODES)
    forward = nio.ornt_transform(src, target)
    out = np.stack([nio.apply_orientation(c, forward) for c in image]).astype(np.float32)
    return np.ascontiguousarray(out), nio.ornt_transform(target, src)


def reoriented_zooms(ref, back: np.ndarray) -> tuple[float, float, float]:
    """The voxel size (mm) of ``ref`` along the axes of the training orientation (``back``:
    the orientation from them to ``ref``'s, as :func:`to_training_orientation` returns)."""
    zooms = [float(z) for z in ref.header.get_zooms()[:3]]
    # back[i] = [axis of ref, flip] for training axis i
    return tuple(zooms[int(back[i, 0])] for i in range(3))


def apply_orientation(volume: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """``volume (X, Y, Z, ...)`` flipped / permuted by ``ornt`` on its first three axes."""
    from nibabel import orientations as nio

    return np.ascontiguousarray(nio.apply_orientation(volume, ornt))


def load_input(item: SegmentInput):
    """``(image (C, X, Y, Z) float32, reference nibabel image for affine and header)``."""
    import nibabel as nib

    if item.subject is None:
        return _read_volume(item.paths[0])
    volume = item.subject.load()  # checks corruption, geometry, NaN, empty contrasts
    ref = nib.load(item.paths[0])  # header only (already read once, so it is readable)
    return volume.image, ref




def nifti_like(data: np.ndarray, ref, dtype):
    import nibabel as nib

    img = nib.Nifti1Image(data, ref.affine, header=ref.header)
    img.set_data_dtype(dtype)
    img.header["cal_min"] = img.header["cal_max"] = 0  # the input's display range is not ours
    return img
