"""From a dataset on disk to a slice store and a split: the data-preparation stage.

``gpcore preprocess --source brats|figshare-mat|manifest --input PATH --out DIR`` and
``gpcore split --store DIR`` are the command-line forms; :func:`prepare_study` is what the
study notebook calls for a profile.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..configs import load_profile
from .errors import DataError
from .records import BRATS_CLASSES, BRATS_CONTRASTS
from .splits import patient_split, published_split, save_split
from .store import SliceStore, build_store

SOURCES = ("brats", "figshare-mat", "manifest")
FIGSHARE_CLASSES = ("meningioma", "glioma", "pituitary")
def read_items(source: str, path: str | os.PathLike, on_error: str = "stop",
               contrasts=BRATS_CONTRASTS):
    """Discover a dataset: ``(items, skipped, store options)`` for :func:`build_store`."""
    skipped: list[DataError] = []
    if source == "brats":
        from .brats import discover_brats

        items = discover_brats(path, contrasts=contrasts, on_error=on_error, skipped=skipped)
        options = {"classes": BRATS_CLASSES, "channels": tuple(contrasts)}
    elif source == "figshare-mat":
        from .figshare import discover_figshare_mat

        items = discover_figshare_mat(path, on_error=on_error, skipped=skipped)
        options = {"classes": FIGSHARE_CLASSES, "class_codes": {1: 0, 2: 1, 3: 2},
                   "channels": ("t1ce",), "background": "zero"}
    elif source == "manifest":
        from .manifest import read_manifest

        items = read_manifest(path, on_error=on_error, skipped=skipped)
        names = {}
        for item in items:
            names.setdefault(item.label, item.label_name)
        codes = sorted(names)
        # image files (JPEG / PNG) have a noisy background: zeroed outside the head
        options = {"classes": tuple(names[c] for c in codes),
                   "class_codes": {c: i for i, c in enumerate(codes)}, "channels": (),
                   "background": "zero"}
    else:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    return items, skipped, options


def preprocess(source: str, path: str | os.PathLike, out_dir: str | os.PathLike, *,
               size: int | None = None, workers: int | None = None, on_error: str = "stop",
               contrasts=BRATS_CONTRASTS, progress: bool = True) -> SliceStore:
    """Read a dataset and build its slice store (see :func:`gpcore.data.store.build_store`)."""
    items, skipped, options = read_items(source, path, on_error, contrasts)
    return build_store(items, out_dir, source={"kind": source, "root": str(Path(path).resolve())},
                       size=size, workers=workers, on_error=on_error, skipped=skipped,
                       progress=progress, **options)


def make_split(store: SliceStore, out: str | os.PathLike, protocol: str = "patient",
               folds: int = 5, val_fraction: float = 0.2, seed: int = 1701) -> Path:
    """Write the split of a store (``patient`` or the leaky ``published`` protocol)."""
    if protocol == "patient":
        split = patient_split(store.index, folds, val_fraction, seed)
    elif protocol == "published":
        split = published_split(store.index, folds)
    else:
        raise ValueError(f"protocol must be 'patient' or 'published', got {protocol!r}")
    return save_split(split, out)


def prepare_study(study: str, profile: str, work_dir: str | os.PathLike,
                  data_dir: str | os.PathLike | None = None, workers: int | None = None,
                  on_error: str = "stop", phantom_subjects: int | None = None
                  ) -> tuple[SliceStore, Path]:
    """Phantom generation (phantom study) -> slice store -> patient-level split.

    ``phantom_subjects``: a cohort size other than the profile's (the recipe study's larger
    cohorts); everything else comes from the profile.
    Returns the store (``work_dir/store_<size>``) and the split path ``work_dir/split.csv``
    (rewritten each time: it is cheap and deterministic). Phantom generation and preprocessing
    are skipped when their outputs exist with the same parameters.
    """
    cfg = load_profile(profile, study)["data"]
    work = Path(work_dir)
    if study == "phantom":
        from .phantom import generate_phantom

        n, seed, hgg = cfg["phantom_subjects"], cfg["phantom_seed"], cfg["phantom_hgg_fraction"]
        n = int(phantom_subjects or n)
        raw = work.parent / f"phantom_raw_n{n}_seed{seed}_hgg{hgg}"
        data_dir = generate_phantom(raw, n, seed=seed, workers=workers, hgg_fraction=hgg)
        source = "brats"
    elif study == "brats2020":
        source = "brats"
    elif study == "figshare":
        source = "figshare-mat" if not str(data_dir).endswith(".csv") else "manifest"
    else:
        raise ValueError(f"unknown study {study!r}")
    if data_dir is None:
        raise ValueError(f"study {study!r} needs data_dir")
    # one store per resolution, so that changing a profile's size never meets a stale store
    size = cfg["slice_size"]
    store = preprocess(source, data_dir, work / f"store_{size or 'native'}", size=size,
                       workers=workers, on_error=on_error)
    split = make_split(store, work / "split.csv", "patient", cfg["folds"], cfg["val_fraction"],
                       cfg["split_seed"])
    return store, split


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preprocess", help="build a memory-mapped slice store from a dataset")
    p.add_argument("--source", choices=SOURCES, required=True,
                   help="brats: BraTS 2020 (or phantom) folder; figshare-mat: folder of the "
                        "official .mat files; manifest: CSV of 2D images and masks")
    p.add_argument("--input", required=True, help="dataset folder or manifest CSV")
    p.add_argument("--out", required=True, help="store folder to create")
    p.add_argument("--size", type=int, help="resize slices to SIZE×SIZE (default: native)")
    p.add_argument("--workers", type=int, help="processes (default: all cores)")
    p.add_argument("--on-error", choices=("stop", "skip"), default="stop",
                   help="stop at the first bad input (default) or skip it and report")
    p.add_argument("--contrasts", default=",".join(BRATS_CONTRASTS),
                   help="BraTS channel order (default t1,t2,t1ce,flair)")
    p.set_defaults(func=lambda a: _preprocess_cli(a))

    p = sub.add_parser("split", help="write a split of a slice store")
    p.add_argument("--store", required=True)
    p.add_argument("--out", help="CSV path (default STORE/split_<protocol>.csv)")
    p.add_argument("--protocol", choices=("patient", "published"), default="patient",
                   help="patient-level K-fold (default) or the reference's leaky slice split")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=1701)
    p.set_defaults(func=lambda a: _split_cli(a))


def _preprocess_cli(args) -> int:
    store = preprocess(args.source, args.input, args.out, size=args.size, workers=args.workers,
                       on_error=args.on_error, contrasts=tuple(args.contrasts.split(",")))
    from .figures import class_counts

    idx = store.index
    print(f"{store.path}: {len(store)} slices of {idx.patient_id.nunique()} patients, "
          f"images {tuple(store.images.shape)} {store.images.dtype}")
    print(class_counts(store).to_string(index=False))
    if (store.path / "skipped.csv").is_file():
        print(f"skipped inputs are listed in {store.path / 'skipped.csv'}")
    return 0


def _split_cli(args) -> int:
    store = SliceStore(args.store)
    out = args.out or store.path / f"split_{args.protocol}.csv"
    make_split(store, out, args.protocol, args.folds, args.val_fraction, args.seed)
    print(f"wrote {out}" + (" (slice-level split, leaky: for comparison only)"
                            if args.protocol == "published" else ""))
    return 0
