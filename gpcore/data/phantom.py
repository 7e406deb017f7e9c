"""The BraTS-2020-shaped synthetic tumour phantom (spec: ``docs/spec/phantom.md``).

>>> from gpcore.data.phantom import generate_phantom, phantom_figure
>>> training = generate_phantom("data/phantom", n_subjects=20, seed=0)
>>> phantom_figure(training, "data/phantom/phantom_example")   # PNG + PDF

writes, exactly in the BraTS 2020 layout::

    data/phantom/MICCAI_BraTS2020_TrainingData/
        name_mapping.csv
        BraTS20_Training_001/BraTS20_Training_001_{t1,t1ce,t2,flair,seg}.nii.gz
        ...

Images: int16, ``(240, 240, 155)`` at 1 mm, BraTS's affine (LPS voxel axes), exactly 0 outside
the brain; seg: uint8 labels 0/1/2/4. Anatomy: nilearn's MNI ICBM152 2009a templates, warped per
subject (:mod:`.phantom_anatomy`); tumours: :mod:`.phantom_tumour`.

Determinism: subject ``i`` draws only from ``numpy.random.default_rng([seed, i])``, grades from
``default_rng([seed, 0])``, and files are gzip-compressed with a zero mtime and no file name, so
the same seed gives byte-identical files whatever the number of workers.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from . import phantom_anatomy as anat
from . import phantom_tumour as tum

TRAINING_DIR = "MICCAI_BraTS2020_TrainingData"
#: BraTS 2020's ``name_mapping.csv`` columns
NAME_MAPPING_COLUMNS = ("Grade", "BraTS_2017_subject_ID", "BraTS_2018_subject_ID",
                        "TCGA_TCIA_subject_ID", "BraTS_2019_subject_ID", "BraTS_2020_subject_ID")
#: file suffixes written per subject (images in BraTS's file order, then the segmentation)
SUFFIXES = ("t1", "t1ce", "t2", "flair", "seg")
#: BraTS 2020's HGG:LGG ratio
HGG_FRACTION = 293 / 369
#: gzip level: 1 is ~6x faster than 6 for ~5 % larger files (noise barely compresses anyway)
GZIP_LEVEL = 1


def subject_id(index: int) -> str:
    """``BraTS20_Training_NNN`` for a 1-based ``index``."""
    return f"BraTS20_Training_{index:03d}"


def assign_grades(n_subjects: int, seed: int, hgg_fraction: float = HGG_FRACTION) -> list[str]:
    """``round(n * hgg_fraction)`` HGG in a seeded random order; at least one of each if n >= 2."""
    n_hgg = int(round(n_subjects * hgg_fraction))
    if n_subjects >= 2:
        n_hgg = min(max(n_hgg, 1), n_subjects - 1)
    order = np.random.default_rng([seed, 0]).permutation(n_subjects)
    grades = ["LGG"] * n_subjects
    for i in order[:n_hgg]:
        grades[i] = "HGG"
    return grades


def generate_subject(subject_index: int, grade: str, seed: int,
                     return_tissue: bool = False) -> dict:
    """One subject's volumes, in memory.

    Returns ``{"images": {"t1"|"t1ce"|"t2"|"flair": (240, 240, 155) int16}, "seg": (240, 240,
    155) uint8, "affine": (4, 4), "kind": tumour kind}``; with ``return_tissue`` also ``"gm"``,
    ``"wm"``, ``"csf"`` (float32 fractions on the same grid, tumour not removed) and ``"brain"``
    (bool).
    """
    if grade not in ("HGG", "LGG"):
        raise ValueError(f"grade must be 'HGG' or 'LGG', got {grade!r}")
    rng = np.random.default_rng([seed, subject_index])
    tpl = anat.load_template()
    pose = anat.random_pose(rng, tpl)
    box = anat.brain_box(pose, tpl)
    shape = tuple(s.stop - s.start for s in box)
    origin = np.array([s.start for s in box])

    # elastic displacement (output voxels), correlation length ~ 20 mm
    amp = float(rng.uniform(1.5, 3.5))
    disp = np.stack([amp * anat.smooth_field(rng, shape, 10.0, 1.0) for _ in range(3)])

    plan = tum.plan_tumour(rng, grade)
    seed_vox = _pick_seed(rng, pose, tpl, disp, origin)  # box coordinates
    if plan.mass > 0:
        cube, push = tum.mass_displacement(plan, shape, seed_vox)
        disp[(slice(None), *cube)] -= push
        del push
    coords = anat.source_coords(pose, box, disp)
    del disp
    brain_soft = anat.warp(tpl.brain, coords)
    brain = brain_soft > 0.5
    gm = anat.warp(tpl.gm, coords) * brain
    wm = anat.warp(tpl.wm, coords) * brain
    t1_tpl = anat.warp(tpl.t1, coords) * brain
    del coords
    csf = np.clip(brain_soft - gm - wm, 0.0, 1.0) * brain

    images = anat.healthy_intensities(rng, gm, wm, csf, t1_tpl, brain)
    depth = anat.upsample(_coarse_smooth(brain_soft, 4, 2.0), shape)
    edge = brain & (depth < 0.75)
    images["t1ce"] += anat.contrast_enhancement(rng, csf, depth, edge)

    cube = tum.local_cube(seed_vox, shape)
    cube_origin = np.array([s.start for s in cube])
    labels_cube = tum.grow_labels(rng, plan, seed_vox - cube_origin, brain_soft[cube], wm[cube])
    tum.paint(rng, plan, labels_cube, {k: v[cube] for k, v in images.items()})

    # acquisition: global scale, smooth multiplicative bias, Rician noise, zero background
    bias_common = anat.smooth_field(rng, shape, 40.0, 1.0)
    out_images = {}
    for name in ("t1", "t1ce", "t2", "flair"):
        scale = float(rng.uniform(400.0, 1200.0))
        own = anat.smooth_field(rng, shape, 50.0, 1.0)
        bias = np.exp(float(rng.uniform(0.05, 0.15)) * bias_common + np.float32(0.05) * own)
        clean = images.pop(name) * bias * scale
        sigma = float(rng.uniform(0.015, 0.035)) * scale
        n1 = rng.standard_normal(shape, dtype=np.float32) * sigma
        n2 = rng.standard_normal(shape, dtype=np.float32) * sigma
        noisy = np.sqrt((clean + n1) ** 2 + n2 ** 2)
        noisy[~brain] = 0.0
        full = np.zeros(anat.GRID, np.int16)
        full[box] = np.clip(np.rint(noisy), 0, np.iinfo(np.int16).max).astype(np.int16)
        out_images[name] = full

    seg = np.zeros(anat.GRID, np.uint8)
    seg[tuple(slice(o + s.start, o + s.stop) for o, s in zip(origin, cube))] = labels_cube
    result = {"images": out_images, "seg": seg, "affine": anat.BRATS_AFFINE.copy(),
              "kind": plan.kind}
    if return_tissue:
        for key, arr in (("gm", gm), ("wm", wm), ("csf", csf), ("brain", brain)):
            full = np.zeros(anat.GRID, arr.dtype)
            full[box] = arr
            result[key] = full
    return result


def _coarse_smooth(volume: np.ndarray, step: int, sigma: float) -> np.ndarray:
    from scipy import ndimage as ndi

    return ndi.gaussian_filter(volume[::step, ::step, ::step], sigma)


def _pick_seed(rng: np.random.Generator, pose: anat.Pose, tpl: anat.Template,
               disp: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """A tumour seed (box voxel) in deep white matter of the cerebrum.

    Candidates are drawn on the output grid and mapped to the template (without mass effect,
    which is zero at the seed anyway). Template z in [70, 140] (MNI z -2..68 mm) keeps the seed
    in the cerebrum and well inside the brain's slice range.
    """
    shape = np.array(disp.shape[1:])
    cand = rng.integers(0, shape, size=(4000, 3))
    d = disp[:, cand[:, 0], cand[:, 1], cand[:, 2]].T
    rel = cand + origin + d - anat.OUT_CENTRE
    src = rel @ pose.matrix.T + pose.offset
    idx = np.clip(np.rint(src).astype(int), 0, np.array(tpl.wm.shape) - 1)
    wm = tpl.wm[idx[:, 0], idx[:, 1], idx[:, 2]]
    ok = (wm > 0.9) & (src[:, 2] >= 70) & (src[:, 2] <= 140)
    pick = int(np.argmax(ok)) if ok.any() else int(np.argmax(wm))
    return cand[pick].astype(float)


# ---------------------------------------------------------------------------------- writing


def nifti_gz_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    """A ``.nii.gz`` as bytes, deterministic: gzip mtime 0 and no embedded file name."""
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_data_dtype(array.dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return gzip.compress(img.to_bytes(), compresslevel=GZIP_LEVEL, mtime=0)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, then rename: never a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def subject_paths(training_dir: Path, index: int) -> dict[str, Path]:
    """``{suffix: path}`` of subject ``index``'s five files."""
    sid = subject_id(index)
    return {s: training_dir / sid / f"{sid}_{s}.nii.gz" for s in SUFFIXES}


def _write_subject(training_dir: Path, index: int, grade: str, seed: int) -> tuple[int, float]:
    """Generate and write one subject unless its five files exist; ``(index, seconds)``."""
    paths = subject_paths(training_dir, index)
    if all(p.exists() for p in paths.values()):
        return index, 0.0
    start = time.perf_counter()
    subject = generate_subject(index, grade, seed)
    paths["seg"].parent.mkdir(parents=True, exist_ok=True)
    for name, arr in subject["images"].items():
        _atomic_write(paths[name], nifti_gz_bytes(arr, subject["affine"]))
    _atomic_write(paths["seg"], nifti_gz_bytes(subject["seg"], subject["affine"]))
    return index, time.perf_counter() - start


def name_mapping_text(grades: list[str]) -> str:
    """``name_mapping.csv`` content: BraTS 2020 columns, unused IDs ``NA``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(NAME_MAPPING_COLUMNS)
    for i, grade in enumerate(grades, start=1):
        writer.writerow([grade, "NA", "NA", "NA", "NA", subject_id(i)])
    return buf.getvalue()


def generate_phantom(out_dir: str | os.PathLike, n_subjects: int, seed: int = 0,
                     workers: int | None = None, hgg_fraction: float = HGG_FRACTION,
                     progress: bool = True) -> Path:
    """Write a phantom cohort in the BraTS 2020 layout; return the ``MICCAI_BraTS2020_TrainingData``
    folder.

    Subjects whose five files exist are skipped, so an interrupted run can be resumed (it must
    be resumed with the same ``n_subjects``, ``seed`` and ``hgg_fraction``: grades depend on
    them). ``workers``: processes (default ``os.cpu_count()``; 1 runs in this process).
    """
    if n_subjects < 1:
        raise ValueError(f"n_subjects must be >= 1, got {n_subjects}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    training_dir = Path(out_dir) / TRAINING_DIR
    training_dir.mkdir(parents=True, exist_ok=True)
    grades = assign_grades(n_subjects, seed, hgg_fraction)
    mapping = training_dir / "name_mapping.csv"
    text = name_mapping_text(grades)
    if mapping.exists() and mapping.read_text() != text:
        # its subjects were drawn with other grades: mixing them would mislabel the cohort
        raise FileExistsError(
            f"{mapping}: this folder holds a phantom made with other parameters (subjects, seed "
            f"or HGG fraction); choose another output folder or delete {training_dir}")
    if not mapping.exists():
        _atomic_write(mapping, text.encode())

    from tqdm.auto import tqdm

    jobs = [(training_dir, i, grades[i - 1], seed) for i in range(1, n_subjects + 1)]
    workers = max(1, min(workers or os.cpu_count() or 1, n_subjects))
    bar = tqdm(total=n_subjects, desc="phantom subjects", unit="subject", disable=not progress)
    try:
        if workers == 1:
            for job in jobs:
                _write_subject(*job)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(_write_subject, *job) for job in jobs]
                for fut in as_completed(futures):
                    fut.result()  # re-raise a worker's error here
                    bar.update()
    finally:
        bar.close()
    return training_dir


# ----------------------------------------------------------------------------------- figure



def read_name_mapping(training_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """``[(subject id, grade)]`` from ``name_mapping.csv``."""
    with open(Path(training_dir) / "name_mapping.csv", newline="") as f:
        return [(row["BraTS_2020_subject_ID"], row["Grade"]) for row in csv.DictReader(f)]


def phantom_figure(training_dir: str | os.PathLike, out_stem: str | os.PathLike) -> list[Path]:
    """First HGG and first LGG subject at their largest-tumour axial slice: T1, T2, T1CE, FLAIR
    and T1CE with the labels overlaid. Saves ``out_stem.png`` and ``out_stem.pdf``."""
    import matplotlib.pyplot as plt
    import nibabel as nib
    from matplotlib.patches import Patch

    from ..io import save_figure
    from .figures import LABEL_COLOURS

    training_dir = Path(training_dir)
    chosen = []
    for grade in ("HGG", "LGG"):
        for sid, g in read_name_mapping(training_dir):
            if g == grade and (training_dir / sid / f"{sid}_seg.nii.gz").exists():
                chosen.append((sid, g))
                break
    if not chosen:
        raise FileNotFoundError(f"{training_dir}: no subject with a segmentation to show")

    order = ("t1", "t2", "t1ce", "flair")
    fig, axes = plt.subplots(len(chosen), 5, figsize=(15, 3.4 * len(chosen)), squeeze=False)
    for row, (sid, grade) in zip(axes, chosen):
        folder = training_dir / sid
        seg = np.asarray(nib.load(folder / f"{sid}_seg.nii.gz").dataobj)
        k = int(np.argmax((seg > 0).sum(axis=(0, 1))))
        vols = {c: np.asarray(nib.load(folder / f"{sid}_{c}.nii.gz").dataobj[:, :, k], float)
                for c in order}
        # display: rows = Y (anterior at the top), columns = X (patient's left on the right)
        for ax, c in zip(row[:4], order):
            sl = vols[c].T
            ax.imshow(sl, cmap="gray", vmin=0, vmax=np.percentile(sl[sl > 0], 99.5))
            ax.set_title(f"{c.upper()}", fontsize=10)
        t1ce = vols["t1ce"].T
        row[4].imshow(t1ce, cmap="gray", vmin=0, vmax=np.percentile(t1ce[t1ce > 0], 99.5))
        overlay = np.zeros((*t1ce.shape, 4))
        for lab, (_, colour) in LABEL_COLOURS.items():
            overlay[seg[:, :, k].T == lab] = (*colour, 0.55)
        row[4].imshow(overlay)
        row[4].set_title("T1CE + labels", fontsize=10)
        row[0].set_ylabel(f"{sid}\n{grade}, slice {k}", fontsize=9)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [Patch(color=c, label=name) for name, c in LABEL_COLOURS.values()]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False)
    fig.suptitle("BraTS-layout synthetic phantom (not patient data): one HGG and one LGG subject, "
                 "largest-tumour axial slice", fontsize=12)
    fig.tight_layout(rect=(0, 0.04, 1, 0.96))
    paths = save_figure(fig, out_stem)
    plt.close(fig)
    return paths


# -------------------------------------------------------------------------------------- CLI


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``gpcore phantom --out DIR --subjects N --seed S [--workers W] [--figure]``."""
    p = subparsers.add_parser(
        "phantom", help="write the BraTS-2020-layout synthetic tumour phantom",
        description="Write DIR/MICCAI_BraTS2020_TrainingData (BraTS 2020 layout, synthetic).")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--subjects", type=int, default=20, help="number of subjects (default 20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: all CPU cores)")
    p.add_argument("--figure", action="store_true",
                   help="also write DIR/phantom_example.{png,pdf}")
    p.set_defaults(func=_cli)
    return p


def _cli(args: argparse.Namespace) -> int:
    training = generate_phantom(args.out, args.subjects, seed=args.seed, workers=args.workers)
    print(training)
    if args.figure:
        for path in phantom_figure(training, Path(args.out) / "phantom_example"):
            print(path)
    return 0
