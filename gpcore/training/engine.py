"""The training loop: any registered model, any slice store and fold, resumable, DDP-ready.

A run folder holds ``config.yaml`` (the resolved configuration, the split, the store's version
and package versions), ``split.csv`` (a copy of the split used), ``metrics.csv`` (one row per
epoch), ``last.pt`` (full state for ``--resume``: model, optimiser, scheduler, RNG states,
epoch), ``best.safetensors`` + ``best.json`` (the model selected on validation patients),
``curves.png`` and ``summary.json``.

What a batch costs and what happens between epochs is the model's training objective
(:mod:`gpcore.training.objectives`, chosen by ``model.objective``): class-weighted
cross-entropy for the GP models and ``cnn_gradcam``; for MProtoNet its joint loss, prototype
pushes and last-layer passes, which also write ``prototypes.csv``.

Reproducibility: every epoch starts from RNG states derived from (seed, epoch, rank), so the
shuffling, the augmentations (DataLoader workers are seeded from them) and the dropout masks of
an epoch do not depend on what ran before it. A run resumed from the checkpoint of epoch ``e``
therefore continues exactly as the uninterrupted run did.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from .. import __version__
from ..data.dataset import Augmentation, SliceDataset
from ..data.sampling import level_filter
from ..data.splits import load_split, split_record, split_rows
from ..data.store import SliceStore
from ..io import atomic_path
from ..models import create_model, save_model
from .config import resolve_config
from .fast import FastPaths
from .distributed import DistInfo, barrier, init_distributed, shutdown
from .metrics import balanced_class_weights, classification_scores
from .objectives import CrossEntropyObjective, TrainingContext, build_objective

SELECTION = {"macro_f1": max, "balanced_accuracy": max, "accuracy": max, "val_loss": min}


def train_device(cfg: dict) -> torch.device:
    """The device of ``train.device`` (``auto``: CUDA when available, else the CPU)."""
    want = cfg["train"]["device"]
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(want)


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


def make_optimiser(params, tc: dict, device: torch.device) -> torch.optim.Optimizer:
    """``train.optimizer``: ``adam`` (coupled L2 weight decay, the GP paper) or ``adamw``
    (decoupled, MProtoNet); ``params`` may be parameter groups with their own settings."""
    kind = tc.get("optimizer", "adam")
    classes = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if kind not in classes:
        raise ValueError(f"train.optimizer must be one of {sorted(classes)}, got {kind!r}")
    return classes[kind](params, lr=tc["lr"], weight_decay=tc["weight_decay"],
                         fused=device.type == "cuda" or None)


def warmup_cosine(epochs: int, warmup: int):
    """LR factor of 0-based epoch e: ``(e+1)/warmup`` during the warm-up, then a cosine from 1
    to 0 over the remaining epochs (MProtoNet's ``WUCosALR``: LambdaLR then
    CosineAnnealingLR(T_max=epochs-warmup), in closed form)."""
    def factor(e: int) -> float:
        if e < warmup:
            return (e + 1) / warmup
        span = epochs - warmup
        return 1.0 if span <= 0 else (1 + math.cos(math.pi * (e - warmup) / span)) / 2
    return factor


def make_scheduler(optimiser, tc: dict):
    """``train.lr_schedule``: ``none``, ``cosine`` (CosineAnnealingLR over all epochs) or
    ``warmup_cosine`` (linear warm-up over ``train.warmup_fraction`` of the epochs, at least
    one, then cosine); stepped once per epoch."""
    kind, epochs = tc["lr_schedule"], int(tc["epochs"])
    if kind in (None, "none"):
        return None
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs)
    if kind == "warmup_cosine":
        warmup = max(1, int(epochs * float(tc.get("warmup_fraction", 0.2)) + 1e-9))
        return torch.optim.lr_scheduler.LambdaLR(optimiser, warmup_cosine(epochs, warmup))
    raise ValueError(f"train.lr_schedule must be none, cosine or warmup_cosine, got {kind!r}")


@torch.no_grad()
def evaluate(model, loader, weights, device, amp: bool,
             per_sample_loss=CrossEntropyObjective.per_sample_loss
             ) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted validation loss (``per_sample_loss``: cross-entropy unless the objective has
    its own), labels and predictions over a whole loader."""
    model.eval()
    total, wsum, ys, preds = 0.0, 0.0, [], []
    for batch in loader:
        x = batch["image"].to(device, non_blocking=True)
        y = batch["label"].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        per_sample = per_sample_loss(logits, y)
        total += float((weights[y] * per_sample).sum())
        wsum += float(weights[y].sum())
        ys.append(y.cpu().numpy())
        preds.append(logits.argmax(1).cpu().numpy())
    return total / max(wsum, 1e-12), np.concatenate(ys), np.concatenate(preds)


def train(store: str | os.PathLike, split: str | os.PathLike, out_dir: str | os.PathLike,
          model: str = "gp_unet", fold: int = 0, profile: str = "quick",
          overrides: list[str] | dict | None = None, resume: bool = False,
          progress: bool = True, study: str | None = None) -> Path:
    """Train ``model`` on ``fold`` of ``split`` over ``store``; returns the run folder.
    ``study``: the profile's sections for that study apply (``studies:`` in the profile)."""
    out = Path(out_dir)
    if resume and (out / "config.yaml").is_file():
        cfg = yaml.safe_load((out / "config.yaml").read_text())["config"]
    else:
        if (out / "last.pt").is_file():
            raise FileExistsError(f"{out}: holds a run already; pass --resume to continue it or "
                                  f"choose another --out")
        cfg = resolve_config(profile, model, overrides, study)
    device = train_device(cfg)
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
    fast = FastPaths.from_config(tc["fast"], device, deterministic=tc["deterministic"])
    fast.apply_backend_flags()
    amp, channels_last = fast.bf16, fast.channels_last

    # ---- data -----------------------------------------------------------------------------
    store = SliceStore(store_dir)
    split = load_split(split_path)
    index = store.index
    train_rows = split_rows(split, index, fold, "train")
    step = int(tc.get("train_slice_step") or 1)
    if step > 1:  # neighbouring slices are near-duplicates: every k-th one costs 1/k the time
        train_rows = train_rows[index["slice_index"].to_numpy()[train_rows] % step == 0]
    train_rows = level_filter(store, train_rows, float(tc.get("min_brain_fraction") or 0.0))
    val_rows = split_rows(split, index, fold, "val")
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise ValueError(f"{split_path}: fold {fold} has {len(train_rows)} training and "
                         f"{len(val_rows)} validation slices; both must be non-empty")
    n_classes = len(store.classes)
    labels = index["label"].to_numpy()
    weights_np = (balanced_class_weights(labels[train_rows], n_classes)
                  if tc["class_weights"] == "balanced" else np.ones(n_classes))
    weights = torch.tensor(weights_np, dtype=torch.float32, device=device)
    augmentation = (Augmentation(channel_scale=float(tc.get("channel_scale", 0.0)))
                    if tc["augment"] else None)
    train_ds = SliceDataset(store, train_rows, tc["normalisation"], augmentation, with_mask=False)
    val_ds = SliceDataset(store, val_rows, tc["normalisation"], None, with_mask=False)
    sampler = DistributedSampler(train_ds, num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=seed, drop_last=False)
    workers = int(tc["num_workers"])
    loader_kw = {"num_workers": workers, "pin_memory": fast.pin_memory,
                 # persistent workers keep their RNG streams across epochs, which would make
                 # an epoch depend on the ones before it: off in deterministic mode
                 "persistent_workers": workers > 0 and bool(tc["fast"]["persistent_workers"])
                 and not tc["deterministic"]}
    drop_last = bool(tc.get("drop_last", False))
    if drop_last and len(train_ds) < tc["batch_size"] * info.world_size:
        print(f"[train] drop_last ignored: {len(train_ds)} training slices hold no full batch "
              f"of {tc['batch_size']}")
        drop_last = False
    train_loader = DataLoader(train_ds, batch_size=tc["batch_size"], sampler=sampler,
                              drop_last=drop_last, **loader_kw)
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
        # SyncBatchNorm runs on GPUs only; on CPU (gloo) each process normalises its own
        # micro-batch and DDP broadcasts rank 0's running statistics
        if device.type == "cuda" and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                                         for m in net.modules()):
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        ddp_net = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    # compile falls back to eager (with a warning) when it fails on this platform
    step_net = fast.compile_model(ddp_net) if fast.compile else ddp_net
    ctx = TrainingContext(
        net=net, step_net=step_net, weights=weights, info=info, device=device, amp=amp,
        channels_last=channels_last, accumulate=int(tc["accumulate"]),
        train_loader=train_loader, sampler=sampler, out=out, progress=progress,
        epochs=int(tc["epochs"]),
        # training slices without augmentation, in store order (MProtoNet's push)
        make_push_loader=lambda: DataLoader(
            SliceDataset(store, train_rows, tc["normalisation"], None, with_mask=False),
            batch_size=tc["batch_size"] * 2, shuffle=False, **loader_kw))
    objective = build_objective(ctx, tc)
    optimiser = make_optimiser(objective.param_groups(), tc, device)
    scheduler = make_scheduler(optimiser, tc)

    # ---- run folder and resume ----------------------------------------------------------------
    start_epoch, history, best, stale = 0, [], None, 0
    if resume and (out / "last.pt").is_file():
        state = torch.load(out / "last.pt", map_location=device, weights_only=True)
        net.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        objective.load_state_dict(state.get("objective"))
        start_epoch, best, stale = state["epoch"] + 1, state["best"], state["stale"]
        history = pd.read_csv(out / "metrics.csv").iloc[:start_epoch].to_dict("records")
        if info.is_main:
            print(f"[train] resuming {out} after epoch {state['epoch'] + 1}")
    elif info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(split_path, out / "split.csv")
        record = {"config": cfg, "store": store.record(),
                  "split": split_record(split_path, split, fold),
                  "class_weights": weights_np.tolist(), "classes": store.classes,
                  "world_size": info.world_size, "device": str(device),
                  "fast_paths": fast.describe(),
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
        net.zero_grad(set_to_none=True)
        running, seen, parts = 0.0, 0, {}
        bar = tqdm(train_loader, desc=f"{cfg['model']['name']} epoch {epoch + 1}/{tc['epochs']}",
                   disable=not (progress and info.is_main), leave=False)
        n_batches = len(train_loader)
        for i, batch in enumerate(bar):
            x, y = ctx.batch(batch)
            last_micro = (i + 1) % accumulate == 0 or i + 1 == n_batches
            sync = ddp_net.no_sync() if info.enabled and not last_micro else \
                contextlib.nullcontext()
            with sync:
                loss, logged, batch_parts = objective.training_loss(x, y)
                loss.backward()
            if last_micro:
                if tc["grad_clip_value"]:
                    torch.nn.utils.clip_grad_value_(net.parameters(), tc["grad_clip_value"])
                optimiser.step()
                # all parameters: the objective may use some the optimiser does not step
                net.zero_grad(set_to_none=True)
            running += float(logged)
            seen += len(y)
            for key, value in batch_parts.items():
                parts[key] = parts.get(key, 0.0) + float(value)
            bar.set_postfix(loss=f"{running / seen:.4f}")
        if scheduler is not None:
            scheduler.step()
        between = objective.end_of_epoch(epoch)  # e.g. MProtoNet's push + last-layer passes

        val_loss, y_true, y_pred = evaluate(net, val_loader, weights, device, amp,
                                            objective.per_sample_loss)
        scores = classification_scores(y_true, y_pred, n_classes)
        row = {"epoch": epoch + 1, "train_loss": running / max(seen, 1), "val_loss": val_loss,
               **{f"val_{k}": v for k, v in scores.items()},
               **{f"train_{k}": v / max(seen, 1) for k, v in parts.items()}, **between,
               "lr": optimiser.param_groups[0]["lr"], "seconds": time.time() - t0}
        history.append(row)
        value = val_loss if tc["selection"] == "val_loss" else scores[tc["selection"]]
        improved = False
        if objective.selectable(epoch):  # MProtoNet: only models right after a push
            if best is None or (value > best if pick is max else value < best):
                best, stale, improved = value, 0, True
            else:
                stale += 1
        if info.is_main:
            if improved:
                save_model(net, out / "best.safetensors", extra={**extra, "epoch": epoch + 1,
                                                                  tc["selection"]: value})
            with atomic_path(out / "metrics.csv") as tmp:
                pd.DataFrame(history).to_csv(tmp, index=False)
            state = {"model": net.state_dict(), "optimiser": optimiser.state_dict(),
                     "scheduler": scheduler.state_dict() if scheduler else None,
                     "objective": objective.state_dict(),
                     "epoch": epoch, "best": best, "stale": stale, "rng": _rng_state()}
            with atomic_path(out / "last.pt") as tmp:
                torch.save(state, tmp)
            print(f"[train] {cfg['model']['name']} epoch {epoch + 1}/{tc['epochs']}: "
                  f"train loss {row['train_loss']:.4f}, val loss {val_loss:.4f}, "
                  f"val macro-F1 {scores['macro_f1']:.3f}, "
                  f"{row['seconds']:.1f} s" + (" pushed" if between.get("pushed") else "")
                  + (" *" if improved else ""), flush=True)
        barrier(info)
        if tc["early_stopping"] and stale >= int(tc["early_stopping"]):
            break

    if info.is_main:
        save_model(net, out / "last.safetensors", extra={**extra, "epoch": len(history)})
        _finish(out, cfg, history, tc["selection"], pick, time.time() - started, objective)
    barrier(info)
    return out


def _finish(out: Path, cfg: dict, history: list[dict], selection: str, pick, seconds: float,
            objective):
    from ..io import save_figure
    import matplotlib.pyplot as plt

    metrics = pd.DataFrame(history)
    key = "val_loss" if selection == "val_loss" else f"val_{selection}"
    candidates = metrics[[objective.selectable(int(e) - 1) for e in metrics["epoch"]]]
    best_row = candidates.loc[candidates[key].idxmin() if pick is min else candidates[key].idxmax()]
    summary = {"model": cfg["model"]["name"], "profile": cfg["profile"], "epochs": len(metrics),
               "selection": selection, "best_epoch": int(best_row["epoch"]),
               "best": {k: float(v) for k, v in best_row.items() if k.startswith("val_")},
               "wall_seconds_this_call": round(seconds, 1)}
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].plot(metrics["epoch"], metrics["train_loss"], label="train")
    axes[0].plot(metrics["epoch"], metrics["val_loss"], label="validation")
    axes[0].set_xlabel("epoch"), axes[0].set_ylabel(objective.loss_label), axes[0].legend()
    for name in ("val_macro_f1", "val_balanced_accuracy", "val_accuracy"):
        axes[1].plot(metrics["epoch"], metrics[name], label=name[4:].replace("_", " "))
    axes[1].axvline(summary["best_epoch"], color="grey", ls=":", lw=1)
    axes[1].set_xlabel("epoch"), axes[1].set_ylim(0, 1), axes[1].legend(fontsize=8)
    fig.suptitle(f"{cfg['model']['name']}, profile {cfg['profile']}: training curves")
    fig.tight_layout()
    save_figure(fig, out / "curves")
    plt.close(fig)
