"""The slice store: one folder of memory-mapped arrays that every later stage reads.

Layout of a store folder::

    images.npy   (N, C, H, W)  int16 / uint8 / float32, memory-mappable (.npy format)
    masks.npy    (N, H, W)     uint8, sub-region labels kept (BraTS 0/1/2/4; 2D datasets 0/1)
    index.csv    one row per slice: row, patient_id, slice_index, sample_id, label,
                 class_name, grade, tumour_area, source_file, fold
    store.json   source, version and preprocessing parameters (written last: its presence
                 marks a complete store)
    skipped.csv  inputs left out with ``on_error="skip"``, and why (only if any)

Building streams one subject (or one patient of a 2D dataset) at a time into a shard, in
parallel; a re-run skips finished shards, and the final arrays are assembled shard by shard
under temporary names and renamed, so peak memory does not grow with the number of subjects
and an interrupted build leaves nothing a later stage could mistake for a store.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..io import atomic_path, publish_dir
from .errors import DataError, check_on_error
from .records import BRATS_CLASSES, SliceSample, VolumeSubject

STORE_FORMAT = "gpcore-slice-store"
STORE_VERSION = 1
INDEX_COLUMNS = ["row", "patient_id", "slice_index", "sample_id", "label", "class_name", "grade",
                 "tumour_area", "source_file", "fold"]
#: label of slices without a known class (e.g. BraTS validation data, no segmentation)
UNLABELLED = -1


# --------------------------------------------------------------------------------------------
# slicing and resizing
# --------------------------------------------------------------------------------------------
def resize_slices(images: np.ndarray, masks: np.ndarray, size: int | None):
    """``images (S, C, H, W)``, ``masks (S, H, W)`` -> the same at ``size × size``.

    Images: Pillow's bilinear filter, which widens its support when down-sizing (anti-aliased:
    a down-sized slice keeps its mean intensity); masks: nearest, so sub-region labels stay
    labels. Pillow rather than torch, because worker processes are forked and OpenMP thread
    pools do not survive a fork.
    """
    if size is None or images.shape[-2:] == (size, size):
        return images, masks
    from PIL import Image

    out_img = np.empty((*images.shape[:2], size, size), np.float32)
    out_msk = np.empty((len(masks), size, size), np.uint8)
    for s in range(images.shape[0]):
        for c in range(images.shape[1]):
            plane = Image.fromarray(np.ascontiguousarray(images[s, c], dtype=np.float32), "F")
            out_img[s, c] = np.asarray(plane.resize((size, size), Image.Resampling.BILINEAR))
        label = Image.fromarray(np.ascontiguousarray(masks[s], dtype=np.uint8), "L")
        out_msk[s] = np.asarray(label.resize((size, size), Image.Resampling.NEAREST))
    return out_img, out_msk


def _store_dtype(source_dtype: np.dtype) -> np.dtype:
    """Integral sources keep a compact integer type (lossless at native resolution)."""
    source_dtype = np.dtype(source_dtype)
    if source_dtype == np.uint8:
        return np.dtype(np.uint8)
    if np.issubdtype(source_dtype, np.integer) and source_dtype.itemsize <= 2:
        return np.dtype(np.int16) if source_dtype != np.uint16 else np.dtype(np.float32)
    return np.dtype(np.float32)


def _cast(images: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(images), info.min, info.max).astype(dtype)
    return images.astype(dtype)


def slice_volume(subject: VolumeSubject, size: int | None):
    """Axial slices of one subject, labelled as published.

    Slice ``k`` is ``volume[..., k]`` (native nibabel order, no reorientation). Tumour in the
    segmentation -> the subject's grade (LGG 1, HGG 2); no tumour but any non-zero voxel in any
    contrast -> Healthy (0); empty -> dropped. (The reference judged emptiness on T1 alone.)
    Without a segmentation (validation data) every non-empty slice is kept, label -1.

    Returns ``images (S, C, H, W)``, ``masks (S, H, W)`` uint8, and the index rows.
    """
    vol = subject.load()
    if subject.seg_path is not None and subject.grade not in ("LGG", "HGG"):
        raise DataError(subject.folder, f"grade {subject.grade!r} is not LGG or HGG",
                        "fix the Grade column of name_mapping.csv")
    image = vol.image  # (C, X, Y, Z)
    seg = vol.seg if vol.seg is not None else np.zeros(image.shape[1:], np.uint8)
    non_empty = image.reshape(-1, image.shape[-1]).any(axis=0)
    tumour = (seg > 0).reshape(-1, seg.shape[-1]).any(axis=0)
    keep = np.flatnonzero(non_empty | tumour)
    images = np.moveaxis(image[..., keep], -1, 0)  # (S, C, X, Y)
    masks = np.moveaxis(seg[..., keep], -1, 0).astype(np.uint8)
    images, masks = resize_slices(images, masks, size)
    if vol.seg is None:
        labels = np.full(len(keep), UNLABELLED)
    else:
        grade_label = BRATS_CLASSES.index(subject.grade)
        labels = np.where(tumour[keep], grade_label, 0)
    source = subject.seg_path or subject.image_paths[0]
    rows = [{"patient_id": subject.subject_id, "slice_index": int(k), "sample_id": f"{k:03d}",
             "label": int(lab), "class_name": BRATS_CLASSES[lab] if lab >= 0 else "",
             "grade": subject.grade or "", "tumour_area": int((m > 0).sum()),
             "source_file": str(source), "fold": ""}
            for k, lab, m in zip(keep, labels, masks)]
    return _cast(images, _store_dtype(vol.source_dtype)), masks, rows


def slice_samples(samples: Sequence[SliceSample], size: int | None, class_codes: dict[int, int],
                  background: str = "keep"):
    """One patient's 2D slices: ``images (S, C, H, W)``, ``masks (S, H, W)``, index rows.
    ``background="zero"``: pixels outside the head set to 0 (:mod:`gpcore.data.head`)."""
    from .head import zero_background

    images, masks, rows = [], [], []
    eight_bit = True  # 8-bit sources (PNG/JPEG) are stored as uint8, rounded after resizing
    for i, sample in enumerate(samples):
        image, mask = sample.load()
        eight_bit &= bool(image.min() >= 0 and image.max() <= 255
                          and np.array_equal(image, np.rint(image)))
        if mask is None:
            mask = np.zeros(image.shape[1:], np.uint8)
        if background == "zero":
            image = zero_background(image)
        if size is None and images and image.shape != images[0].shape:
            raise DataError(sample.image_path,
                            f"slice size {image.shape[1:]} differs from {images[0].shape[1:]}",
                            "choose one resolution for the store with --size (e.g. 512)")
        image, mask = resize_slices(image[None], mask[None], size)
        if sample.label not in class_codes:
            raise DataError(sample.image_path, f"label {sample.label} is not one of the dataset's "
                            f"classes {sorted(class_codes)}", "fix the label or the class list")
        images.append(image[0])
        masks.append(mask[0])
        rows.append({"patient_id": sample.patient_id, "slice_index": i,
                     "sample_id": str(sample.sample_id), "label": class_codes[sample.label],
                     "class_name": sample.label_name, "grade": sample.label_name,
                     "tumour_area": int((mask[0] > 0).sum()), "source_file": str(sample.image_path),
                     "fold": "" if sample.fold is None else int(sample.fold)})
    dtype = np.dtype(np.uint8 if eight_bit else np.float32)
    return _cast(np.stack(images), dtype), np.stack(masks).astype(np.uint8), rows


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------
def _unit_name(unit_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", unit_id)


def _write_shard(job) -> tuple[str, int, str | None]:
    """Process one unit into ``shards/<unit>/``; returns ``(unit, n_slices, error or None)``."""
    unit_id, items, shard_root, size, class_codes, on_error, background = job
    final = Path(shard_root) / _unit_name(unit_id)
    if (final / "index.csv").is_file():
        return unit_id, -1, None  # finished in an earlier run
    try:
        if isinstance(items, VolumeSubject):
            images, masks, rows = slice_volume(items, size)
        else:
            images, masks, rows = slice_samples(items, size, class_codes, background)
    except DataError as err:
        if on_error == "stop":
            raise
        return unit_id, 0, str(err)
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "images.npy", images)
    np.save(tmp / "masks.npy", masks)
    pd.DataFrame(rows, columns=INDEX_COLUMNS[1:]).to_csv(tmp / "index.csv", index=False)
    publish_dir(tmp, final)
    return unit_id, len(rows), None


def _units(items: Sequence[VolumeSubject | SliceSample]) -> list[tuple[str, object]]:
    """Subjects are units; 2D slices are grouped into one unit per patient."""
    units: dict[str, object] = {}
    for item in items:
        if isinstance(item, VolumeSubject):
            units[item.subject_id] = item
        else:
            units.setdefault(str(item.patient_id), []).append(item)
    return sorted(units.items())


def build_store(items: Sequence[VolumeSubject | SliceSample], out_dir: str | os.PathLike, *,
                source: dict, classes: Sequence[str] = BRATS_CLASSES,
                class_codes: dict[int, int] | None = None, channels: Sequence[str] = (),
                size: int | None = None, workers: int | None = None, on_error: str = "stop",
                skipped: Sequence[DataError] = (), progress: bool = True,
                background: str = "keep") -> "SliceStore":
    """Preprocess ``items`` (from a reader) into a slice store at ``out_dir``.

    Args:
        items: ``VolumeSubject``s (BraTS-like) or ``SliceSample``s (2D datasets).
        source: described in ``store.json`` (e.g. ``{"kind": "brats2020", "root": ...}``).
        classes: class names by label (BraTS: Healthy, LGG, HGG).
        class_codes: for 2D datasets, the dataset's label code -> class label.
        channels: contrast names in channel order, recorded in ``store.json``.
        size: resize slices to ``size × size`` (None: keep the native resolution).
        workers: processes (default: all cores).
        on_error: ``"stop"`` raises on the first bad input; ``"skip"`` leaves it out and
            lists it in ``skipped.csv`` (together with ``skipped``, the readers' problems).
        background: 2D datasets: ``"keep"`` the pixels as read, or ``"zero"`` everything
            outside the head (:mod:`gpcore.data.head`; for JPEG / PNG exports, whose
            background is not exactly 0). Volumes (skull-stripped BraTS) are kept as read.
    """
    check_on_error(on_error)
    if background not in ("keep", "zero"):
        raise ValueError(f"background must be 'keep' or 'zero', got {background!r}")
    out = Path(out_dir)
    params = {"size": size, "classes": list(classes), "channels": list(channels),
              "class_codes": {str(k): v for k, v in (class_codes or {}).items()},
              "source": source}
    if background != "keep":  # recorded only when used: stores built before stay valid
        params["background"] = background
    meta_path = out / "store.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("params") == json.loads(json.dumps(params)):
            return SliceStore(out)  # already built with the same inputs
        raise FileExistsError(f"{out}: holds a store built with other parameters; choose another "
                              f"--out or delete the folder")
    shard_root = out / "shards"
    shard_root.mkdir(parents=True, exist_ok=True)
    units = _units(items)
    if not units:
        raise DataError(source.get("root", out), "no subjects or slices found",
                        "check the input path and layout")
    jobs = [(uid, unit, str(shard_root), size, class_codes or {}, on_error, background)
            for uid, unit in units]
    problems = [{"input": e.path, "problem": str(e)} for e in skipped]
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    started = time.time()
    bar = tqdm(total=len(jobs), desc="preprocessing", unit="subject", disable=not progress)
    if workers == 1:
        results = map(_write_shard, jobs)
    else:
        pool = ProcessPoolExecutor(workers)
        results = pool.map(_write_shard, jobs)
    try:
        for uid, n, err in results:
            if err:
                problems.append({"input": uid, "problem": err})
            bar.update()
    finally:
        bar.close()
        if workers > 1:
            pool.shutdown(cancel_futures=True)
    if problems:
        with atomic_path(out / "skipped.csv") as tmp:
            pd.DataFrame(problems).to_csv(tmp, index=False)
    _assemble(out, [uid for uid, _ in units], params, channels, classes, started, len(problems))
    return SliceStore(out)


def _write_npy(path: Path, dtype: np.dtype, shape: tuple[int, ...], blocks) -> None:
    """Write an ``.npy`` file block by block with plain writes (atomically).

    Unlike filling a ``open_memmap``, this keeps no written pages mapped in the process, so
    its resident memory stays at one block whatever the size of the store.
    """
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": tuple(int(x) for x in shape)}
    written = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_2_0(f, header)
        for block in blocks:
            # small chunks of a memory-mapped shard: no large temporary copies, whose freed
            # heap the allocator may keep
            for start in range(0, len(block), 8):
                f.write(np.ascontiguousarray(block[start:start + 8], dtype=dtype).data)
            written += len(block)
            del block
        if written != shape[0]:
            raise RuntimeError(f"{path}: wrote {written} of {shape[0]} slices")


def _assemble(out: Path, unit_ids: list[str], params: dict, channels, classes, started: float,
              n_skipped: int) -> None:
    """Concatenate the shards into ``images.npy`` / ``masks.npy`` one shard at a time."""
    shards = [out / "shards" / _unit_name(u) for u in unit_ids]
    shards = [s for s in shards if (s / "index.csv").is_file()]
    if not shards:
        raise DataError(out, "every input was skipped", f"see {out / 'skipped.csv'}")
    index = pd.concat([pd.read_csv(s / "index.csv", dtype={"patient_id": str, "sample_id": str},
                                   keep_default_na=False) for s in shards], ignore_index=True)
    heads = [np.load(s / "images.npy", mmap_mode="r") for s in shards]
    shapes = {h.shape[1:] for h in heads if len(h)}
    if len(shapes) > 1:
        raise DataError(out, f"subjects have different slice shapes {sorted(shapes)}",
                        "choose one resolution with --size")
    dtype = np.result_type(*[h.dtype for h in heads])
    n, slice_shape = len(index), shapes.pop()
    del heads
    _write_npy(out / "images.npy", dtype, (n, *slice_shape),
               (np.load(s / "images.npy", mmap_mode="r") for s in shards))
    _write_npy(out / "masks.npy", np.dtype(np.uint8), (n, *slice_shape[1:]),
               (np.load(s / "masks.npy", mmap_mode="r") for s in shards))
    index.insert(0, "row", np.arange(n))
    with atomic_path(out / "index.csv") as tmp:
        index.to_csv(tmp, index=False)
    from .. import __version__

    meta = {"format": STORE_FORMAT, "version": STORE_VERSION, "gpcore_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "params": params,
            "n_slices": n, "n_patients": int(index["patient_id"].nunique()),
            "image_shape": list(slice_shape), "image_dtype": str(dtype),
            "channels": list(channels), "classes": list(classes), "n_skipped": n_skipped,
            "preprocessing": {
                "slicing": "axial volume[..., k], native nibabel order, no reorientation",
                "labelling": "tumour -> subject grade; tumour-free non-empty -> Healthy; "
                             "empty (all contrasts zero) dropped",
                "resize": "images bilinear with anti-aliasing, masks nearest" if params["size"]
                          else "none",
                "normalisation": "none stored; applied on load (see gpcore.data.normalise)"},
            "build_seconds": round(time.time() - started, 1)}
    with atomic_path(out / "store.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(out / "shards", ignore_errors=True)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
@dataclass
class SliceStore:
    """A built store. Arrays are opened memory-mapped on first use in each process, so a
    store object can be handed to DataLoader workers."""

    path: Path

    def __post_init__(self):
        self.path = Path(self.path)
        if not (self.path / "store.json").is_file():
            raise DataError(self.path, "not a complete slice store (no store.json)",
                            "build it with `gpcore preprocess`, or re-run an interrupted build")
        self.meta = json.loads((self.path / "store.json").read_text())
        if self.meta.get("format") != STORE_FORMAT or self.meta.get("version") != STORE_VERSION:
            raise DataError(self.path / "store.json", "unsupported store format/version "
                            f"{self.meta.get('format')}/{self.meta.get('version')}",
                            "rebuild the store with this gpcore version")
        self._images = self._masks = None

    def record(self) -> dict:
        """What a run folder's ``config.yaml`` says of its store (``created`` tells a rebuilt
        store from the one a run was trained on)."""
        return {"path": str(self.path.resolve()), "format": self.meta["format"],
                "version": self.meta["version"], "created": self.meta.get("created")}

    def __getstate__(self):  # memmaps are re-opened in the receiving process
        return {"path": self.path, "meta": self.meta}

    def __setstate__(self, state):
        self.path, self.meta = state["path"], state["meta"]
        self._images = self._masks = None

    @cached_property
    def index(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "index.csv", dtype={"patient_id": str, "sample_id": str,
                                                            "grade": str, "class_name": str},
                           keep_default_na=False)

    @property
    def images(self) -> np.ndarray:
        """``(N, C, H, W)`` memory-mapped, read-only."""
        if self._images is None:
            self._images = np.load(self.path / "images.npy", mmap_mode="r")
        return self._images

    @property
    def masks(self) -> np.ndarray:
        """``(N, H, W)`` uint8 memory-mapped, read-only."""
        if self._masks is None:
            self._masks = np.load(self.path / "masks.npy", mmap_mode="r")
        return self._masks

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def __len__(self) -> int:
        return int(self.meta["n_slices"])
