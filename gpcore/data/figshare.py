"""Reader for the official Figshare brain-tumour dataset (Cheng et al.,
doi:10.6084/m9.figshare.1512427).

One MATLAB v7.3 file (HDF5) per slice, ``1.mat`` … ``3064.mat``, each holding a struct ``cjdata``:

* ``image``: int16 intensities, usually 512 × 512;
* ``label``: 1×1 double, 1 meningioma, 2 glioma, 3 pituitary;
* ``PID``: patient ID, a MATLAB char array (stored as uint16 character codes);
* ``tumorMask``: binary mask, same size as the image;
* ``tumorBorder``: ``[x1, y1, x2, y2, …]`` border points (MATLAB's 1-based coordinates).

plus ``cvind.mat``: the dataset's patient-wise fold (1–5) of each file number, in order.

Orientation: h5py returns MATLAB's column-major arrays transposed; this reader transposes
``image`` and ``tumorMask`` back (``.T``) so slices look as in MATLAB. The reference
(``Dataset_Prep_Orientation.py``) did not transpose: image and mask stayed aligned, but its
slices are the transpose of MATLAB's (and of this reader's).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import check_on_error, report
from .errors import DataError
from .records import SliceSample

#: the dataset's label codes
CLASS_NAMES: dict[int, str] = {1: "meningioma", 2: "glioma", 3: "pituitary"}
REDOWNLOAD = "re-download the file from figshare (doi:10.6084/m9.figshare.1512427)"
_FIELDS = ("image", "label", "PID", "tumorMask", "tumorBorder")


def _open(path: Path):
    import h5py

    if not path.is_file():
        raise DataError(path, "file not found", REDOWNLOAD)
    try:
        return h5py.File(path, "r")
    except OSError as exc:  # not HDF5: truncated, corrupt, or a pre-v7.3 .mat
        raise DataError(path, f"not a readable MATLAB v7.3 (HDF5) file ({exc})",
                        REDOWNLOAD) from exc


def _field(path: Path, group, name: str) -> np.ndarray:
    """One dataset of ``cjdata`` as h5py returns it (MATLAB's axes reversed)."""
    if name not in group:
        raise DataError(path, f"field cjdata.{name} missing", REDOWNLOAD)
    try:
        return np.asarray(group[name])
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(path, f"field cjdata.{name} unreadable ({exc})", REDOWNLOAD) from exc


def _label(path: Path, group) -> int:
    raw = _field(path, group, "label").ravel()
    if raw.size != 1 or not np.isfinite(raw[0]) or float(raw[0]) not in CLASS_NAMES:
        raise DataError(path, f"cjdata.label {raw.tolist()} is not one of 1, 2, 3", REDOWNLOAD)
    return int(raw[0])


def _pid(path: Path, group) -> str:
    dset = group["PID"] if "PID" in group else None
    if dset is not None and int(np.ravel(dset.attrs.get("MATLAB_empty", 0))[0]):
        raise DataError(path, "cjdata.PID is empty", REDOWNLOAD)
    # MATLAB char array: uint16 codes, shape (n, 1) or (1, n) depending on the writer
    codes = _field(path, group, "PID").ravel()
    try:
        pid = "".join(chr(int(c)) for c in codes).strip()
    except (ValueError, OverflowError) as exc:
        raise DataError(path, f"cjdata.PID is not a character array ({exc})", REDOWNLOAD)
    if not pid:
        raise DataError(path, "cjdata.PID is empty", REDOWNLOAD)
    return pid


def _group(path: Path, f):
    if "cjdata" not in f:
        raise DataError(path, f"no struct cjdata (found: {', '.join(f.keys())})",
                        "use the original figshare .mat files")
    return f["cjdata"]


def read_figshare_mat(path: str | os.PathLike) -> dict:
    """Read one Figshare ``.mat`` slice, in MATLAB orientation.

    Returns ``{"image": (H, W) float32, "label": int (1–3), "pid": str,
    "mask": (H, W) uint8 in {0, 1}, "border": (K, 2) float64 (x, y) points}``.
    Raises :class:`DataError` for an unreadable file or a missing/bad field.
    """
    path = Path(path)
    with _open(path) as f:
        g = _group(path, f)
        image = _field(path, g, "image").T.astype(np.float32)  # .T: back to MATLAB orientation
        mask = _field(path, g, "tumorMask").T
        border = _field(path, g, "tumorBorder").astype(np.float64)
        label, pid = _label(path, g), _pid(path, g)
    if image.ndim != 2:
        raise DataError(path, f"cjdata.image has shape {image.shape}, expected 2D", REDOWNLOAD)
    if mask.shape != image.shape:
        raise DataError(path, f"cjdata.tumorMask shape {mask.shape} differs from image "
                        f"{image.shape}", REDOWNLOAD)
    # tumorBorder is a MATLAB vector [x1, y1, x2, y2, ...]; either storage orientation ravels
    # to that order for a vector. (A K×2 matrix would come back as (2, K): undo that too.)
    if border.ndim == 2 and 1 not in border.shape and border.shape[0] == 2:
        border = border.T
    elif border.size % 2:
        raise DataError(path, f"cjdata.tumorBorder has {border.size} values, expected x, y pairs",
                        REDOWNLOAD)
    return {"image": image, "label": label, "pid": pid,
            "mask": (mask > 0).astype(np.uint8), "border": border.reshape(-1, 2)}


def load_figshare_sample(sample: SliceSample) -> tuple[np.ndarray, np.ndarray]:
    """``(image (1, H, W) float32, mask (H, W) uint8 in {0, 1})`` of one ``.mat`` slice."""
    data = read_figshare_mat(sample.image_path)
    return data["image"][None], data["mask"]


def read_cvind(path: str | os.PathLike) -> np.ndarray:
    """The fold (1–5) of each file number ``n`` at index ``n − 1``: ``(N,)`` int64."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found", REDOWNLOAD)
    try:
        with _open(path) as f:
            if "cvind" not in f:
                raise DataError(path, f"no variable cvind (found: {', '.join(f.keys())})",
                                REDOWNLOAD)
            raw = np.asarray(f["cvind"])
    except DataError as err:
        if "HDF5" not in err.problem:
            raise
        # an older-format copy of cvind.mat: scipy reads MATLAB v5 files
        from scipy.io import loadmat

        try:
            raw = np.asarray(loadmat(path)["cvind"])
        except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
            raise DataError(path, f"cannot be read as a MATLAB file ({exc})", REDOWNLOAD) from exc
    folds = raw.ravel().astype(np.float64)
    if folds.size == 0 or not np.all(np.isfinite(folds)) or np.any(folds != np.round(folds)) \
            or folds.min() < 1:
        raise DataError(path, "cvind does not hold positive integer fold numbers", REDOWNLOAD)
    return folds.astype(np.int64)


def _header(path: Path) -> tuple[int, str]:
    """``(label, PID)`` without reading the image."""
    with _open(path) as f:
        g = _group(path, f)
        for name in _FIELDS:  # a file missing a field fails at discovery, not mid-build
            if name not in g:
                raise DataError(path, f"field cjdata.{name} missing", REDOWNLOAD)
        return _label(path, g), _pid(path, g)


def discover_figshare_mat(folder: str | os.PathLike, cvind_path: str | os.PathLike | None = None,
                          on_error: str = "stop", skipped: list | None = None) -> list[SliceSample]:
    """Find the ``<number>.mat`` slices in ``folder``, sorted by number; reads label and PID.

    ``sample_id`` is the file number; ``fold`` comes from ``cvind_path`` (default
    ``folder/cvind.mat`` if present, else ``None``). ``sample.load()`` reads the slice lazily:
    ``(image (1, H, W) float32, mask (H, W) uint8)``. ``on_error``: ``"stop"`` raises the first
    :class:`DataError`; ``"skip"`` appends it to ``skipped`` and leaves the file out.
    """
    check_on_error(on_error)
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "folder not found", "pass the folder holding 1.mat … 3064.mat")
    # the release unzips into part folders (brainTumorDataPublic_1-766, ...): look below too
    files = sorted((p for p in folder.rglob("*.mat") if p.stem.isdigit()),
                   key=lambda p: int(p.stem))
    numbers = [int(p.stem) for p in files]
    if len(set(numbers)) != len(numbers):
        dup = next(n for n in numbers if numbers.count(n) > 1)
        raise DataError(folder, f"{dup}.mat found more than once",
                        "keep one copy of each slice file below this folder")
    if not files:
        raise DataError(folder, "no <number>.mat files found",
                        "pass the folder holding 1.mat … 3064.mat (unzip the figshare parts)")
    if cvind_path is None and (folder / "cvind.mat").is_file():
        cvind_path = folder / "cvind.mat"
    folds = read_cvind(cvind_path) if cvind_path is not None else None
    samples = []
    for path in files:
        number = int(path.stem)
        try:
            if folds is not None and not 1 <= number <= len(folds):
                raise DataError(path, f"file number {number} has no fold in {cvind_path} "
                                f"({len(folds)} entries)", "use the cvind.mat of the same release")
            label, pid = _header(path)
        except DataError as err:
            report(err, on_error, skipped)
            continue
        samples.append(SliceSample(
            patient_id=pid, sample_id=str(number), label=label, label_name=CLASS_NAMES[label],
            fold=None if folds is None else int(folds[number - 1]), image_path=path,
            mask_path=path,  # the mask lives in the same .mat file
            loader=load_figshare_sample))
    return samples
