"""The training loop: any registered model, any slice store and fold, resumable, DDP-ready.

A run folder holds ``config.yaml`` (the resolved configuration, the split, the store's version
and package versions), ``split.csv`` (a copy of the split used), ``metrics.csv`` (one row per
epoch), ``last.pt`` (full state for ``--resume``: model, optimiser, scheduler, RNG states,
epoch), ``best.safetensors`` + ``best.json`` (the model selected on validation patients),
``curves.png`` and ``summary.json``.

Reproducibility: every epoch starts from RNG states derived from (seed, epoch, rank), so the
shuffling, the augmentations (DataLoader workers are seeded from them) and the dropout masks of
an epoch do not depend on what ran before it. A run resumed from the checkpoint of epoch ``e``
therefore continues exactly as the uninterrupted run did.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from .. import __version__
from ..data.dataset import Augmentation, SliceDataset
from ..data.splits import is_leaky, load_split, split_rows
from ..data.store import SliceStore
from ..io import atomic_path
from ..models import create_model, save_model
from .config import resolve_config
from .distributed import DistInfo, all_reduce_sum, barrier, init_distributed, shutdown
from .metrics import balanced_class_weights, classification_scores

SELECTION = {"macro_f1": max, "balanced_accuracy": max, "accuracy": max, "val_loss": min}


def _device(cfg: dict) -> torch.device:
    want = cfg["train"]["device"]
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(want)


def _fast(cfg: dict, key: str, device: torch.device) -> bool:
    value = cfg["train"]["fast"].get(key, False)
    return device.type == "cuda" if value == "auto" else bool(value)


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    s = (seed * 1_000_003 + epoch * 101 + rank) % 2**31
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _versions() -> dict:
    import numpy
    import sklearn

    return {"gpcore": __version__, "torch": str(torch.__version__), "numpy": numpy.__version__,
            "scikit-learn": sklearn.__version__, "python": platform.python_version()}


def _loss(logits, target, weights, info: DistInfo, accumulate: int):
    """Class-weighted cross-entropy, normalised by the weights of the *global* micro-batch, so
    that DDP's gradient averaging gives exactly the single-process weighted mean."""
    per_sample = F.cross_entropy(logits.float(), target, reduction="none")
    w = weights[target]
    denom = all_reduce_sum(w.sum().detach(), info).clamp_min(1e-12)
    return (w * per_sample).sum() * info.world_size / denom / accumulate, per_sample


@torch.no_grad()
def evaluate(model, loader, weights, device, amp: bool) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted validation loss, labels and predictions over a whole loader."""
    model.eval()
    total, wsum, ys, preds = 0.0, 0.0, [], []
    for batch in loader:
        x = batch["image"].to(device, non_blocking=True)
        y = batch["label"].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        ce = F.cross_entropy(logits.float(), y, reduction="none")
        total += float((weights[y] * ce).sum())
        wsum += float(weights[y].sum())
        ys.append(y.cpu().numpy())
        preds.append(logits.argmax(1).cpu().numpy())
    return total / max(wsum, 1e-12), np.concatenate(ys), np.concatenate(preds)


def train(store: str | os.PathLike, split: str | os.PathLike, out_dir: str | os.PathLike,
          model: str = "gp_unet", fold: int = 0, profile: str = "quick",
          overrides: list[str] | dict | None = None, resume: bool = False,
          progress: bool = True) -> Path:
    """Train ``model`` on ``fold`` of ``split`` over ``store``; returns the run folder."""
    out = Path(out_dir)
    if resume and (out / "config.yaml").is_file():
        cfg = yaml.safe_load((out / "config.yaml").read_text())["config"]
    else:
        if (out / "last.pt").is_file():
            raise FileExistsError(f"{out}: holds a run already; pass --resume to continue it or "
                                  f"choose another --out")
        cfg = resolve_config(profile, model, overrides)
    device = _device(cfg)
    info = init_distributed(device.type)
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
    try:
        return _train(cfg, Path(store), Path(split), out, fold, resume, progress, device, info)
    finally:
        shutdown(info)


def _train(cfg, store_dir: Path, split_path: Path, out: Path, fold: int, resume: bool,
           progress: bool, device: torch.device, info: DistInfo) -> Path:
    tc = cfg["train"]
    seed = int(tc["seed"])
    if tc["deterministic"]:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = _fast(cfg, "cudnn_benchmark", device) and \
        not tc["deterministic"]
    amp = _fast(cfg, "bf16", device)
    channels_last = _fast(cfg, "channels_last", device)

    # ---- data -----------------------------------------------------------------------------
    store = SliceStore(store_dir)
    split = load_split(split_path)
    index = store.index
    train_rows = split_rows(split, index, fold, "train")
    val_rows = split_rows(split, index, fold, "val")
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise ValueError(f"{split_path}: fold {fold} has {len(train_rows)} training and "
                         f"{len(val_rows)} validation slices; both must be non-empty")
    n_classes = len(store.classes)
    labels = index["label"].to_numpy()
    weights_np = (balanced_class_weights(labels[train_rows], n_classes)
                  if tc["class_weights"] == "balanced" else np.ones(n_classes))
    weights = torch.tensor(weights_np, dtype=torch.float32, device=device)
    augmentation = Augmentation() if tc["augment"] else None
    train_ds = SliceDataset(store, train_rows, tc["normalisation"], augmentation, with_mask=False)
    val_ds = SliceDataset(store, val_rows, tc["normalisation"], None, with_mask=False)
    sampler = DistributedSampler(train_ds, num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=seed, drop_last=False)
    workers = int(tc["num_workers"])
    loader_kw = {"num_workers": workers, "pin_memory": _fast(cfg, "pin_memory", device),
                 # persistent workers keep their RNG streams across epochs, which would make
                 # an epoch depend on the ones before it: off in deterministic mode
                 "persistent_workers": workers > 0 and bool(tc["fast"]["persistent_workers"])
                 and not tc["deterministic"]}
    train_loader = DataLoader(train_ds, batch_size=tc["batch_size"], sampler=sampler, **loader_kw)
    val_loader = DataLoader(val_ds, batch_size=tc["batch_size"] * 2, shuffle=False, **loader_kw)

    # ---- model and optimiser ----------------------------------------------------------------
    torch.manual_seed(seed)
    model_opts = {k: v for k, v in cfg["model"].items() if k != "name"}
    net = create_model(cfg["model"]["name"], in_channels=store.images.shape[1],
                       n_classes=n_classes, **model_opts).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    ddp_net = net
    if info.enabled:
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules()):
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        ddp_net = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    step_net = ddp_net
    if tc["fast"].get("compile"):
        try:
            step_net = torch.compile(ddp_net)
        except Exception as err:  # an unsupported platform must not stop training
            print(f"[train] torch.compile failed ({err}); continuing in eager mode")
    optimiser = torch.optim.Adam(net.parameters(), lr=tc["lr"], weight_decay=tc["weight_decay"],
                                 fused=device.type == "cuda" or None)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=tc["epochs"])
                 if tc["lr_schedule"] == "cosine" else None)

    # ---- run folder and resume ----------------------------------------------------------------
    start_epoch, history, best, stale = 0, [], None, 0
    if resume and (out / "last.pt").is_file():
        state = torch.load(out / "last.pt", map_location=device, weights_only=True)
        net.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        start_epoch, best, stale = state["epoch"] + 1, state["best"], state["stale"]
        history = pd.read_csv(out / "metrics.csv").iloc[:start_epoch].to_dict("records")
        if info.is_main:
            print(f"[train] resuming {out} after epoch {state['epoch'] + 1}")
    elif info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(split_path, out / "split.csv")
        record = {"config": cfg, "store": {"path": str(store_dir.resolve()),
                                            "format": store.meta["format"],
                                            "version": store.meta["version"],
                                            "created": store.meta.get("created")},
                  "split": {"path": str(split_path.resolve()), "fold": fold,
                            "protocol": "slice-level (leaky)" if is_leaky(split)
                            else "patient-level"},
                  "class_weights": weights_np.tolist(), "classes": store.classes,
                  "world_size": info.world_size, "device": str(device),
                  "versions": _versions()}
        with atomic_path(out / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(record, sort_keys=False))
    barrier(info)

    extra = {"input_size": int(store.images.shape[-1]), "normalisation": tc["normalisation"],
             "classes": store.classes, "channels": store.meta.get("channels", []),
             "profile": cfg["profile"], "fold": fold}
    pick = SELECTION[tc["selection"]]
    accumulate = int(tc["accumulate"])
    started = time.time()
    for epoch in range(start_epoch, tc["epochs"]):
        t0 = time.time()
        _seed_epoch(seed, epoch, info.rank)
        sampler.set_epoch(epoch)
        step_net.train()
        optimiser.zero_grad(set_to_none=True)
        running, seen = 0.0, 0
        bar = tqdm(train_loader, desc=f"{cfg['model']['name']} epoch {epoch + 1}/{tc['epochs']}",
                   disable=not (progress and info.is_main), leave=False)
        n_batches = len(train_loader)
        for i, batch in enumerate(bar):
            x = batch["image"].to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = batch["label"].to(device, non_blocking=True)
            last_micro = (i + 1) % accumulate == 0 or i + 1 == n_batches
            sync = ddp_net.no_sync() if info.enabled and not last_micro else \
                contextlib.nullcontext()
            with sync:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = step_net(x)
                loss, per_sample = _loss(logits, y, weights, info, accumulate)
                loss.backward()
            if last_micro:
                if tc["grad_clip_value"]:
                    torch.nn.utils.clip_grad_value_(net.parameters(), tc["grad_clip_value"])
                optimiser.step()
                optimiser.zero_grad(set_to_none=True)
            running += float(per_sample.detach().sum())
            seen += len(y)
            bar.set_postfix(loss=f"{running / seen:.4f}")
        if scheduler is not None:
            scheduler.step()

        val_loss, y_true, y_pred = evaluate(net, val_loader, weights, device, amp)
        scores = classification_scores(y_true, y_pred, n_classes)
        row = {"epoch": epoch + 1, "train_loss": running / max(seen, 1), "val_loss": val_loss,
               **{f"val_{k}": v for k, v in scores.items()},
               "lr": optimiser.param_groups[0]["lr"], "seconds": time.time() - t0}
        history.append(row)
        value = val_loss if tc["selection"] == "val_loss" else scores[tc["selection"]]
        if best is None or (value > best if pick is max else value < best):
            best, stale = value, 0
        else:
            stale += 1
        if info.is_main:
            if stale == 0:
                save_model(net, out / "best.safetensors", extra={**extra, "epoch": epoch + 1,
                                                                  tc["selection"]: value})
            with atomic_path(out / "metrics.csv") as tmp:
                pd.DataFrame(history).to_csv(tmp, index=False)
            state = {"model": net.state_dict(), "optimiser": optimiser.state_dict(),
                     "scheduler": scheduler.state_dict() if scheduler else None,
                     "epoch": epoch, "best": best, "stale": stale, "rng": _rng_state()}
            with atomic_path(out / "last.pt") as tmp:
                torch.save(state, tmp)
            print(f"[train] epoch {epoch + 1}/{tc['epochs']}: train loss {row['train_loss']:.4f}, "
                  f"val loss {val_loss:.4f}, val macro-F1 {scores['macro_f1']:.3f}, "
                  f"{row['seconds']:.1f} s" + (" *" if stale == 0 else ""), flush=True)
        barrier(info)
        if tc["early_stopping"] and stale >= int(tc["early_stopping"]):
            break

    if info.is_main:
        save_model(net, out / "last.safetensors", extra={**extra, "epoch": len(history)})
        _finish(out, cfg, history, tc["selection"], pick, time.time() - started)
    barrier(info)
    return out


def _finish(out: Path, cfg: dict, history: list[dict], selection: str, pick, seconds: float):
    from ..io import save_figure
    import matplotlib.pyplot as plt

    metrics = pd.DataFrame(history)
    key = "val_loss" if selection == "val_loss" else f"val_{selection}"
    best_row = metrics.loc[metrics[key].idxmin() if pick is min else metrics[key].idxmax()]
    summary = {"model": cfg["model"]["name"], "profile": cfg["profile"], "epochs": len(metrics),
               "selection": selection, "best_epoch": int(best_row["epoch"]),
               "best": {k: float(v) for k, v in best_row.items() if k.startswith("val_")},
               "wall_seconds_this_call": round(seconds, 1)}
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].plot(metrics["epoch"], metrics["train_loss"], label="train")
    axes[0].plot(metrics["epoch"], metrics["val_loss"], label="validation")
    axes[0].set_xlabel("epoch"), axes[0].set_ylabel("weighted cross-entropy"), axes[0].legend()
    for name in ("val_macro_f1", "val_balanced_accuracy", "val_accuracy"):
        axes[1].plot(metrics["epoch"], metrics[name], label=name[4:].replace("_", " "))
    axes[1].axvline(summary["best_epoch"], color="grey", ls=":", lw=1)
    axes[1].set_xlabel("epoch"), axes[1].set_ylim(0, 1), axes[1].legend(fontsize=8)
    fig.suptitle(f"{cfg['model']['name']}, profile {cfg['profile']}: training curves")
    fig.tight_layout()
    save_figure(fig, out / "curves")
    plt.close(fig)
