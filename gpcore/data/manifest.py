"""Generic reader for 2D image + mask datasets described by a CSV manifest.

One row per slice; default columns (rename with ``columns=``)::

    image, mask, label, patient_id[, fold][, sample_id][, label_name]

``image`` and ``mask`` are paths relative to the dataset root (default: the CSV's folder) and
must stay inside it. Supported files:

* PNG/JPEG (and other Pillow formats): greyscale -> ``(1, H, W)``; colour (RGB, palette, …)
  is converted to greyscale with Pillow's ``convert("L")`` (ITU-R 601 luma), also ``(1, H, W)``;
* ``.npy``: 2D -> ``(1, H, W)``, 3D taken as ``(C, H, W)``;
* 2D NIfTI ``.nii`` / ``.nii.gz``: native nibabel array order, a singleton 3rd axis squeezed.

Masks are binarised to uint8 {0, 1}: 8-bit PNG/JPEG masks with ``> 127`` (JPEG compression
leaves noise around 0 and 255; the figshare JPEG copy needs this), npy/NIfTI/16-bit masks with
``> 0``. A lossless 8-bit mask coded 0/1 (maximum 1) is binarised with ``> 0`` instead, so it is
not silently emptied.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from .errors import check_on_error, report
from .errors import DataError
from .records import SliceSample

REQUIRED = ("image", "mask", "label", "patient_id")
OPTIONAL = ("fold", "sample_id", "label_name")
_JPEG = (".jpg", ".jpeg")
_REEXPORT = "re-export or re-download the file"


# --------------------------------------------------------------------------------------------
# reading one file
# --------------------------------------------------------------------------------------------
def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    return "npy" if name.endswith(".npy") else "pil"


def _read_pil(path: Path, as_mask: bool) -> np.ndarray:
    """``(H, W)``: greyscale values (colour converted), or a mask binarised as documented."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()  # decode now, so a truncated file fails here
        if img.mode == "1":
            return np.asarray(img, dtype=np.uint8)
        if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float: keep values
            arr = np.asarray(img).astype(np.float32)
            return (arr > 0).astype(np.uint8) if as_mask else arr
        arr = np.asarray(img if img.mode == "L" else img.convert("L"))
    if not as_mask:
        return arr.astype(np.float32)
    lossless_01 = arr.max() == 1 and not path.name.lower().endswith(_JPEG)
    return (arr > (0 if lossless_01 else 127)).astype(np.uint8)


def _read_array(path: Path) -> np.ndarray:
    """npy or NIfTI voxels as stored (a NIfTI singleton 3rd axis squeezed)."""
    if _kind(path) == "npy":
        return np.load(path, allow_pickle=False)
    import nibabel as nib

    data = np.asanyarray(nib.load(path).dataobj)
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    if data.ndim != 2:
        raise DataError(path, f"NIfTI shape {data.shape} is not 2D", "store one 2D slice per file")
    return data


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file -> ``(C, H, W)`` float32 (C = 1 except for 3D ``.npy``)."""
    path = Path(path)
    arr = _read(path, as_mask=False)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DataError(path, f"image shape {arr.shape} is neither (H, W) nor (C, H, W)",
                        _REEXPORT)
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise DataError(path, "NaN/Inf pixels", _REEXPORT)
    return arr


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask file -> ``(H, W)`` uint8 in {0, 1}."""
    path = Path(path)
    arr = _read(path, as_mask=True)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise DataError(path, f"mask shape {arr.shape} is not 2D", _REEXPORT)
    return (arr > 0).astype(np.uint8)  # no-op for PIL masks (already binarised)


def _read(path: Path, as_mask: bool) -> np.ndarray:
    from nibabel.filebasedimages import ImageFileError
    from PIL import UnidentifiedImageError

    if not path.is_file():
        raise DataError(path, "file not found", _REEXPORT)
    try:
        if _kind(path) == "pil":
            return _read_pil(path, as_mask)
        return _read_array(path)
    except DataError:
        raise
    except (UnidentifiedImageError, ImageFileError, gzip.BadGzipFile, EOFError, zlib.error,
            OSError, ValueError, SyntaxError) as exc:  # SyntaxError: Pillow's broken-PNG error
        raise DataError(path, f"unreadable ({type(exc).__name__}: {exc})", _REEXPORT) from exc


def load_manifest_sample(sample: SliceSample) -> tuple[np.ndarray, np.ndarray | None]:
    """``(image (C, H, W) float32, mask (H, W) uint8 in {0, 1} or None)``."""
    image = read_image(sample.image_path)
    if sample.mask_path is None:
        return image, None
    mask = read_mask(sample.mask_path)
    if mask.shape != image.shape[1:]:
        raise DataError(sample.mask_path, f"mask shape {mask.shape} differs from image "
                        f"{Path(sample.image_path).name} {image.shape[1:]}",
                        "pair each image with its own mask")
    return image, mask


# --------------------------------------------------------------------------------------------
# the manifest
# --------------------------------------------------------------------------------------------
def _path(csv_path: Path, row: int, root: Path, value: str, what: str) -> Path:
    """``value`` resolved under ``root`` (``..`` and symlinks followed), checked to exist."""
    path = (root / value).resolve()
    if not path.is_relative_to(root):
        raise DataError(csv_path, f"row {row}: {what} path {value!r} points outside the dataset "
                        f"root {root}", "keep all files under the root (or pass root=)")
    if not path.is_file():
        raise DataError(csv_path, f"row {row}: {what} file {value!r} not found (looked at {path})",
                        "fix the path or add the file")
    return path


def _int(csv_path: Path, row: int, column: str, value: str) -> int:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not np.isfinite(number) or number != round(number):
        raise DataError(csv_path, f"row {row}: {column} {value!r} is not an integer",
                        f"fix column {column}")
    return int(number)


def read_manifest(csv_path: str | os.PathLike, root: str | os.PathLike | None = None,
                  on_error: str = "stop", skipped: list | None = None,
                  columns: dict[str, str] | None = None) -> list[SliceSample]:
    """Read a manifest CSV into :class:`SliceSample`s (in row order); reads no pixels.

    Args:
        csv_path: the manifest; its folder is the default ``root``.
        root: the dataset root that image/mask paths are relative to and must stay inside.
        on_error: ``"stop"`` raises the first bad row; ``"skip"`` appends the
            :class:`DataError` to ``skipped`` and leaves the row out.
        columns: ``{field: csv column}`` renames, fields being ``image, mask, label,
            patient_id, fold, sample_id, label_name``.

    Rows are numbered from 1 (the first line after the header). Defaults: ``sample_id`` = row
    number, ``label_name`` = ``str(label)``, ``fold`` = None. An empty ``mask`` cell means no
    mask (``load()`` returns ``None`` for it).
    """
    import pandas as pd

    check_on_error(on_error)
    csv_path = Path(csv_path)
    root = Path(root if root is not None else csv_path.parent).resolve()
    names = {f: f for f in REQUIRED + OPTIONAL}
    unknown = sorted(set(columns or {}) - set(names))
    if unknown:
        raise ValueError(f"columns: unknown field(s) {unknown}; known: {sorted(names)}")
    names.update(columns or {})
    if not csv_path.is_file():
        raise DataError(csv_path, "manifest not found", "check the path")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(csv_path, f"cannot be read as CSV ({exc})", "fix the file") from exc
    missing = [names[f] for f in REQUIRED if names[f] not in table.columns]
    if missing:
        raise DataError(csv_path, f"missing column(s) {', '.join(missing)}; found: "
                        f"{', '.join(table.columns)}", "rename the columns or pass columns=")
    has = {f: names[f] in table.columns for f in OPTIONAL}
    samples, seen = [], set()
    for row, rec in enumerate(table.to_dict("records"), start=1):
        def cell(field):
            return str(rec[names[field]]).strip()
        try:
            label = _int(csv_path, row, names["label"], cell("label"))
            fold = _int(csv_path, row, names["fold"], cell("fold")) \
                if has["fold"] and cell("fold") else None
            sample_id = cell("sample_id") if has["sample_id"] and cell("sample_id") else str(row)
            if sample_id in seen:  # a duplicate id would make index rows ambiguous
                raise DataError(csv_path, f"row {row}: sample_id {sample_id!r} repeated",
                                "make sample_id unique")
            patient = cell("patient_id")
            if not patient:
                raise DataError(csv_path, f"row {row}: empty {names['patient_id']}",
                                "give every row its patient (patient-wise splits need it)")
            image = _path(csv_path, row, root, cell("image"), "image") if cell("image") else None
            if image is None:
                raise DataError(csv_path, f"row {row}: empty {names['image']}", "add the path")
            mask = _path(csv_path, row, root, cell("mask"), "mask") if cell("mask") else None
        except DataError as err:
            report(err, on_error, skipped)
            continue
        seen.add(sample_id)
        label_name = cell("label_name") if has["label_name"] and cell("label_name") else str(label)
        samples.append(SliceSample(patient_id=patient, sample_id=sample_id, label=label,
                                   label_name=label_name, fold=fold, image_path=image,
                                   mask_path=mask, loader=load_manifest_sample))
    return samples
