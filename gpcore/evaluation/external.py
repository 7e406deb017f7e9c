"""A checkpoint that gpcore did not train - a released model on the Hub (``hf://owner/name``) or a
foreign ``.safetensors`` / reference checkpoint - as a run folder, so that ``gpcore evaluate``,
``gpcore compare``, the threshold explorer and ``gpcore segment RUN`` score and show it exactly
like a trained run::

    gpcore evaluate --checkpoint hf://soumickmj/GPUNet_BraTS2020_T1T2T1ceFlair_Axial \
        --store data/brats/paper/store_240 --split data/brats/paper/split.csv --fold 0 \
        --out runs/hub/GPUNet_T1T2T1ceFlair/fold0

The folder gets what a training run leaves (``config.yaml``, ``split.csv``,
``best.safetensors`` + its JSON); ``config.yaml`` says ``external: true`` and names the source
(for Hub models the commit used). Nothing is trained: the fold's validation patients only
choose the map rule, offset and clean-up, as for a trained run; the published offset is
reported beside it.
"""
from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import yaml

from ..io import atomic_path
from ..rundir import RunDir

#: what ``config.yaml`` holds in place of a training configuration
EXTERNAL_PROFILE = "external"


def adopt_checkpoint(checkpoint: str | os.PathLike, store: str | os.PathLike,
                     split: str | os.PathLike, fold: int, out_dir: str | os.PathLike) -> Path:
    """Write a run folder for ``checkpoint`` on ``fold`` of ``split`` over ``store``; return it.

    Checks before anything is written: the store's slices fit the model (channels, the published
    input size of Hub models, the contrast order), the store's classes are the model's, and the
    fold has validation and test patients. An existing folder for the same checkpoint, store
    and fold is reused (its predictions too); one for another is an error.
    """
    from .. import __version__
    from ..data.splits import load_split, split_record, split_rows
    from ..data.store import SliceStore
    from ..inference.predict import check_store, load_checkpoint
    from ..models import save_model
    from ..models.hub import checkpoint_source

    store = store if isinstance(store, SliceStore) else SliceStore(store)
    table = load_split(split)
    for part in ("val", "test"):
        if len(split_rows(table, store.index, fold, part)) == 0:
            raise ValueError(f"{split}: fold {fold} has no {part} slices in {store.path}; "
                             f"give a split of this store's patients")
    model, meta = load_checkpoint(checkpoint)
    source = checkpoint_source(checkpoint, meta)
    check_store(model, meta, store, checkpoint)
    extra = dict(meta.get("extra") or {})
    classes = list(extra.get("classes") or store.classes)
    if len(classes) != model.config["n_classes"] or classes != list(store.classes):
        raise ValueError(f"{store.path}: the store's classes {list(store.classes)} are not the "
                         f"model's {classes} ({source}); score it on a store of its classes")
    extra.setdefault("normalisation", "max")
    extra["classes"] = classes
    extra["source"] = source

    out = RunDir(out_dir)
    record = {
        "config": {"profile": EXTERNAL_PROFILE,
                   "model": {"name": model.model_name, **model.config},
                   "train": {"normalisation": extra["normalisation"]}},
        "external": True,
        "checkpoint": {"source": source},  # a Hub model's URI with the commit used
        "store": store.record(),
        "split": split_record(split, table, fold),
        "classes": classes,
        "versions": {"gpcore": __version__},
        "adopted": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if out.config_file.is_file():
        old = out.record
        same = (old.get("checkpoint") == record["checkpoint"] and old.get("store") == record["store"]
                and (old.get("split") or {}).get("fold") == int(fold))
        if not same:
            raise FileExistsError(f"{out}: holds another run; give a new --out folder or remove "
                                  f"it")
        return out.path
    out.path.mkdir(parents=True, exist_ok=True)
    save_model(model, out.checkpoint, extra=extra)
    with atomic_path(out.split_file) as tmp:
        shutil.copyfile(split, tmp)
    with atomic_path(out.config_file) as tmp:  # last: marks the folder complete
        tmp.write_text(yaml.safe_dump(record, sort_keys=False))
    return out.path

