"""Run a trained model over rows of a slice store and keep everything later stages need.

``predict_store`` writes to ``out_dir``::

    probabilities.npy  (N, K) float32   softmax of the logits
    logits.npy         (N, K) float32
    heatmaps.npy       (N, K, H, W) float16   all class channels, at the store's resolution
    index.csv          the store's index rows (in the order given) plus ``pred`` (argmax)
                       and ``pred_class``
    predict.json       checkpoint, store, number of rows, device, batch size, normalisation

The arrays are filled batch by batch through ``np.lib.format.open_memmap`` (one batch in
memory, whatever N) under temporary names; every file is renamed into place only when all
rows are done, so an interrupted run leaves no output that could be mistaken for a result.

Command line: ``gpcore predict --checkpoint M.safetensors --store DIR --split split.csv
--fold 0 --part test --out DIR``; ``--checkpoint hf://owner/name[@revision]`` runs a released
model from the Hugging Face Hub (:mod:`gpcore.models.hub`).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..io import atomic_path


def load_checkpoint(checkpoint: str | os.PathLike) -> tuple[nn.Module, dict]:
    """``(model, meta)`` of a checkpoint file or ``hf://`` Hub URI; ``meta`` is
    :func:`read_checkpoint_meta`'s dict (``{}`` for a foreign checkpoint without the JSON beside
    it), or the published facts of a Hub model (:func:`gpcore.models.hub.resolve_checkpoint`)."""
    from ..models.hub import load_model

    return load_model(checkpoint)


def check_compatible(model: nn.Module, meta: dict, channels: int, size: tuple[int, int],
                     where: str | os.PathLike) -> None:
    """Raise ``ValueError`` unless slices of ``channels x size`` are what the model was trained
    on (input size from the checkpoint's ``extra.input_size`` when recorded)."""
    in_channels = getattr(model, "in_channels", None)
    if in_channels is not None and in_channels != channels:
        raise ValueError(f"{where}: slices have {channels} channels but the model takes "
                         f"{in_channels}; use a store built with the contrasts the model was "
                         f"trained on")
    input_size = (meta.get("extra") or {}).get("input_size")
    if input_size is not None and tuple(size) != (int(input_size), int(input_size)):
        raise ValueError(f"{where}: slices are {size[0]}x{size[1]} but the model was trained on "
                         f"{input_size}x{input_size}; build a store with --size {input_size}")
    if hasattr(model, "check_spatial_size"):
        model.check_spatial_size(int(size[0]), int(size[1]))


def normalise_batch(images: np.ndarray, mode: str = "max", where: str = "") -> torch.Tensor:
    """``(B, C, H, W)`` array -> float32 tensor, each slice normalised (``gpcore.data.normalise``)."""
    from ..data.normalise import normalise

    batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    out = torch.empty_like(batch)
    for i in range(len(batch)):
        try:
            out[i] = normalise(batch[i], mode)
        except ValueError as exc:
            raise ValueError(f"{where}slice {i} of the batch: {exc}") from exc
    return out


def forward_batches(model: nn.Module, batches: Iterable[torch.Tensor], device,
                    paths=None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The one inference loop (store prediction and ``gpcore segment`` alike): for each
    normalised input batch ``(B, C, H, W)``, yield ``logits (B, K)`` and ``heatmaps
    (B, K, H', W')`` as float32 on ``device``, under inference mode and, with ``paths`` (a
    :class:`~gpcore.training.fast.FastPaths`), its autocast and memory format."""
    for x in batches:
        with torch.inference_mode(), (paths.autocast() if paths is not None else nullcontext()):
            x = x.to(device)
            if paths is not None:
                x = paths.prepare_batch(x)
            logits, heatmap = model.forward_with_heatmap(x)
            logits, heatmap = logits.float(), heatmap.float()
        yield logits, heatmap


def predictions_complete(folder: str | os.PathLike) -> bool:
    """True when :func:`predict_store` finished ``folder`` (``predict.json`` is renamed into
    place last)."""
    return (Path(folder) / "predict.json").is_file()


def read_predictions(folder: str | os.PathLike) -> dict:
    """A prediction folder written by :func:`predict_store`: ``index`` (DataFrame),
    ``probabilities (N, K)``, ``heatmaps (N, K, H, W)`` (memory-mapped), ``labels (N,)``,
    ``patient_ids (N,)``."""
    import pandas as pd

    folder = Path(folder)
    if not predictions_complete(folder):
        raise FileNotFoundError(f"{folder}: no complete predictions (predict.json missing); "
                                f"run gpcore evaluate (or gpcore predict) first")
    index = pd.read_csv(folder / "index.csv", dtype={"patient_id": str}, keep_default_na=False)
    return {"index": index, "probabilities": np.load(folder / "probabilities.npy"),
            "heatmaps": np.load(folder / "heatmaps.npy", mmap_mode="r"),
            "labels": index["label"].to_numpy(), "patient_ids": index["patient_id"].to_numpy()}


def run_predictions(run, store, rows: np.ndarray, part: str, device: str = "cpu",
                    batch_size: int = 64, progress: bool = True) -> dict:
    """A run's predictions on ``part`` (val | test), computed with its best checkpoint once
    and kept in ``RUN/predictions/<part>``: :func:`read_predictions` plus the slices' ground
    truth ``masks (N, H, W)``."""
    from ..rundir import RunDir

    run = RunDir(run)
    folder = run.predictions(part)
    if not predictions_complete(folder):
        predict_store(run.checkpoint, store, rows, folder, batch_size=batch_size,
                      device=device, progress=progress)
    data = read_predictions(folder)
    data["masks"] = np.asarray(store.masks[data["index"]["row"].to_numpy()])
    return data


def predict_store(model: nn.Module | str | os.PathLike, store, rows: Sequence[int] | None,
                  out_dir: str | os.PathLike, batch_size: int = 32, device: str = "cpu",
                  normalisation: str | None = None, progress: bool = True,
                  fast=False) -> Path:
    """Predict logits, probabilities and heatmaps for ``rows`` of ``store``; return ``out_dir``.

    Args:
        model: a GP model, or a checkpoint path or ``hf://`` Hub URI (then rebuilt with
            ``create_model`` and its recorded input size, normalisation and, for Hub models,
            contrast order checked against the store).
        store: a :class:`~gpcore.data.store.SliceStore` or its folder.
        rows: store rows, in output order (``None``: all rows).
        normalisation: per-slice normalisation; ``None`` (default): the checkpoint's recorded
            one, else ``"max"`` as published. When given it must match the recorded one.
        fast: ``False`` (default): fp32, NCHW, exactly as trained. ``True``: the inference
            fast paths that ``"auto"`` turns on for ``device``
            (:meth:`gpcore.training.fast.FastPaths.auto`: bf16 autocast and channels_last on
            CUDA and on CPUs with AMX), or a :class:`~gpcore.training.fast.FastPaths`.
            bf16 changes heatmaps slightly (correlation > 0.999 with fp32 in the checks of
            ``benchmarks/README.md``); outputs are stored as float32 / float16 either way.
            Larger ``batch_size`` values (e.g. 128 on a GPU) raise throughput further.
    """
    from tqdm.auto import tqdm

    from ..data.store import SliceStore
    from ..models.hub import checkpoint_source

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    paths = _fast_paths(fast, device)
    checkpoint, meta = None, {}
    if isinstance(model, (str, os.PathLike)):
        checkpoint = model
        model, meta = load_checkpoint(checkpoint)
    store = store if isinstance(store, SliceStore) else SliceStore(store)
    rows = np.arange(len(store)) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
    if len(rows) == 0:
        raise ValueError(f"{store.path}: no rows to predict (empty split part?)")
    if rows.min() < 0 or rows.max() >= len(store):
        raise ValueError(f"{store.path}: rows must lie in 0..{len(store) - 1}, got "
                         f"{rows.min()}..{rows.max()}")
    recorded = (meta.get("extra") or {}).get("normalisation")
    if normalisation is None:  # a run trained with z-score must be predicted with z-score
        normalisation = recorded or "max"
    if recorded is not None and recorded != normalisation:
        raise ValueError(f"{checkpoint}: the model was trained with normalisation "
                         f"{recorded!r}, not {normalisation!r}; pass normalisation={recorded!r}")
    images = store.images
    n, (h, w) = len(rows), images.shape[2:]
    check_store(model, meta, store, checkpoint)
    index = store.index.set_index("row", drop=False).loc[rows].reset_index(drop=True)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model = model.to(device).eval()
    if paths is not None:
        model = paths.prepare_model(model)
    started = time.time()
    try:
        with ExitStack() as stack:
            tmp = {name: stack.enter_context(atomic_path(out / name))
                   # entered first, renamed last: predict.json marks a complete output
                   for name in ("predict.json", "index.csv", "heatmaps.npy", "logits.npy",
                                "probabilities.npy")}
            probs = logits_out = heatmaps = None
            preds = np.empty(n, np.int64)
            bar = tqdm(total=n, desc="predicting", unit="slice", disable=not progress)
            def batches():
                for start in range(0, n, batch_size):
                    chunk = rows[start:start + batch_size]
                    # sorted, unique reads from the memmap; original order restored after
                    uniq, inverse = np.unique(chunk, return_inverse=True)
                    yield normalise_batch(images[uniq][inverse], normalisation,
                                          f"{store.path / 'images.npy'}: rows "
                                          f"{chunk[0]}..{chunk[-1]}, ")

            try:
                start = 0
                for logits, heatmap in forward_batches(model, batches(), device, paths):
                    logits = logits.cpu().numpy()
                    if probs is None:
                        k = logits.shape[1]
                        probs = np.lib.format.open_memmap(tmp["probabilities.npy"], "w+",
                                                          np.float32, (n, k))
                        logits_out = np.lib.format.open_memmap(tmp["logits.npy"], "w+",
                                                               np.float32, (n, k))
                        heatmaps = np.lib.format.open_memmap(tmp["heatmaps.npy"], "w+",
                                                             np.float16, (n, k, h, w))
                    stop = start + len(logits)
                    logits_out[start:stop] = logits
                    probs[start:stop] = torch.softmax(torch.from_numpy(logits), 1).numpy()
                    heatmaps[start:stop] = heatmap.cpu().numpy().astype(np.float16)
                    preds[start:stop] = logits.argmax(1)
                    bar.update(len(logits))
                    start = stop
                for arr in (probs, logits_out, heatmaps):
                    arr.flush()
            finally:
                bar.close()
                del probs, logits_out, heatmaps
            index["pred"] = preds
            classes = store.classes
            index["pred_class"] = [classes[p] if p < len(classes) else str(p) for p in preds]
            index.to_csv(tmp["index.csv"], index=False)
            info = {"checkpoint": checkpoint_source(checkpoint, meta) if checkpoint else None,
                    "model": getattr(model, "model_name", type(model).__name__),
                    "store": str(store.path.resolve()), "rows": int(n), "device": str(device),
                    "batch_size": int(batch_size), "normalisation": normalisation,
                    "classes": classes, "heatmap_dtype": "float16",
                    "fast": paths.describe() if paths is not None else "off",
                    "seconds": round(time.time() - started, 1)}
            tmp["predict.json"].write_text(json.dumps(info, indent=2) + "\n")
    finally:
        model.train(was_training)
        if paths is not None and paths.channels_last:
            model.to(memory_format=torch.contiguous_format)
    return out


def check_store(model: nn.Module, meta: dict, store, checkpoint=None) -> None:
    """Raise ``ValueError`` unless ``store``'s slices are what the model takes: channels and
    input size (:func:`check_compatible`) and, for a released model, the contrast order."""
    check_compatible(model, meta, store.images.shape[1], tuple(store.images.shape[2:]),
                     store.path / "images.npy")
    _check_hub_contrasts(meta, store, checkpoint)


def _check_hub_contrasts(meta: dict, store, checkpoint) -> None:
    """A released model sees its contrasts in the published order, or not at all."""
    wanted = [c.lower() for c in (meta.get("extra") or {}).get("channels") or []]
    have = [c.lower() for c in store.meta.get("channels") or []]
    if "hub" in meta and wanted and have and wanted != have:
        raise ValueError(f"{checkpoint}: the model takes contrasts {','.join(wanted)} in this "
                         f"order but {store.path} holds {','.join(have)}; build a store with "
                         f"gpcore preprocess --contrasts {','.join(wanted)}")


def _fast_paths(fast, device):
    """``None`` (off), or the :class:`~gpcore.training.fast.FastPaths` for inference."""
    from ..training.fast import FastPaths

    if fast is False or fast is None:
        return None
    if fast is True:
        return FastPaths.auto(device)
    if isinstance(fast, FastPaths):
        return fast
    raise TypeError(f"fast must be True, False or a FastPaths, got {type(fast).__name__}")


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
CHECKPOINT_HELP = ("model weights (.safetensors with its .json, a reference checkpoint, or "
                   "hf://owner/name[@revision] from the Hugging Face Hub)")


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="run a trained model over slices of a store: "
                                       "probabilities, logits and heatmaps")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--store", required=True, help="slice store folder")
    p.add_argument("--split", help="split CSV (default: predict all rows of the store)")
    p.add_argument("--fold", type=int, default=0, help="outer fold of the split (default 0)")
    p.add_argument("--part", choices=("test", "val", "train"), default="test",
                   help="part of the fold (default test)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps ...")
    p.add_argument("--fast", action="store_true",
                   help="bf16 autocast and channels_last where they help (CUDA, CPUs with "
                        "AMX); heatmaps then differ slightly from fp32")
    p.set_defaults(func=_predict_cli)


def _predict_cli(args) -> int:
    from ..data.splits import load_split, split_rows
    from ..data.store import SliceStore

    store = SliceStore(args.store)
    rows = None
    if args.split:
        rows = split_rows(load_split(args.split), store.index, args.fold, args.part)
    # normalisation None: the checkpoint's recorded one, else "max" as published
    out = predict_store(args.checkpoint, store, rows, args.out, batch_size=args.batch_size,
                        device=args.device, normalisation=None, fast=args.fast)
    n = len(store) if rows is None else len(rows)
    print(f"wrote {out}: predictions for {n} slices")
    return 0
