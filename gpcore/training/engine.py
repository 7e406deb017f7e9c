"""The training loop: any registered model, any slice store and fold, resumable, DDP-ready.

A run folder holds ``config.yaml`` (the resolved configuration, the split, the store's version
and package versions), ``split.csv`` (a copy of the split used), ``metrics.csv`` (one row per
epoch), ``last.pt`` (full state for ``--resume``: model, optimiser, scheduler, objective,
epoch, best value), ``best.safetensors`` + ``best.json`` (the model selected on validation patients),
``curves.png`` and ``summary.json`` (:class:`gpcore.rundir.RunDir`).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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
from ..data.sampling import ClassAwareSampler, class_sampling_weights, level_filter
from ..data.splits import load_split, split_record, split_rows
from ..data.store import SliceStore
from ..io import atomic_path
from ..models import create_model, save_model
from ..rundir import RunDir
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


def _versions() -> dict:
    import numpy
    import sklearn

    return {"gpcore": __version__, "torch": str(torch.__version__), "numpy": numpy.__version__,
            "scikit-learn": sklearn.__version__, "python": platform.python_version()}


def make_optimiser(params, tc: dict, device: torch.device | None = None,
                   fast: FastPaths | None = None) -> torch.optim.Optimizer:
    """The one optimiser factory. ``train.optimizer``: ``adam`` (coupled L2 weight decay, the GP
    paper) or ``adamw`` (decoupled, MProtoNet), with ``train.lr`` and ``train.weight_decay``;
    ``params`` may be parameter groups with their own settings. Fused kernels as ``fast`` says
    (:meth:`FastPaths.optimiser_kwargs`), else on CUDA ``device``s."""
    kind = tc.get("optimizer", "adam")
    classes = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if kind not in classes:
        raise ValueError(f"train.optimizer must be one of {sorted(classes)}, got {kind!r}")
    fused = (fast.optimiser_kwargs() if fast is not None
             else {"fused": (device is not None and device.type == "cuda") or None})
    return classes[kind](params, lr=tc["lr"], weight_decay=tc["weight_decay"], **fused)


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
def validate(model, loader, weights, device, amp: bool,
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
    run = RunDir(out)
    if resume and run.config_file.is_file():
        cfg = run.config
    else:
        if run.resume_state.is_file():
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


@dataclass
class FoldData:
    """The fold's slices and their loaders (:func:`build_loaders`)."""

    store: SliceStore
    split: pd.DataFrame
    train_rows: np.ndarray
    n_classes: int
    weights_np: np.ndarray              # (C,) class weights of the training slices
    weights: torch.Tensor               # the same on the device
    sampler: DistributedSampler | ClassAwareSampler
    train_loader: DataLoader
    val_loader: DataLoader
    make_push_loader: Callable[[], DataLoader]  # training slices, no augmentation, store order


@dataclass
class Progress:
    """Where training stands: restored from ``last.pt`` on resume, saved after every epoch."""

    start_epoch: int = 0
    history: list = field(default_factory=list)   # one metrics row per epoch
    best: float | None = None                     # the selection metric's best value
    stale: int = 0                                # epochs since it last improved

    def update(self, value: float, pick) -> bool:
        """Record this epoch's selection value; True when it is the best so far."""
        if self.best is None or (value > self.best if pick is max else value < self.best):
            self.best, self.stale = value, 0
            return True
        self.stale += 1
        return False


def build_loaders(tc: dict, store_dir: Path, split_path: Path, fold: int, fast: FastPaths,
                  info: DistInfo, device: torch.device) -> FoldData:
    """Training slices (every ``train_slice_step``-th, brain-level filtered), validation
    slices, class weights and the loaders (a distributed or class-aware sampler, one rank or
    many)."""
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
    power = float(tc.get("class_sampling_power") or 0.0)
    if power:  # rare classes drawn more often (with replacement), epoch length unchanged;
        # any non-zero power goes through class_sampling_weights, which rejects p outside [0, 1]
        sampler = ClassAwareSampler(class_sampling_weights(labels[train_rows], power),
                                    info.world_size, info.rank, int(tc["seed"]))
    else:
        sampler = DistributedSampler(train_ds, num_replicas=info.world_size, rank=info.rank,
                                     shuffle=True, seed=int(tc["seed"]), drop_last=False)
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
    return FoldData(
        store, split, train_rows, n_classes, weights_np, weights, sampler,
        DataLoader(train_ds, batch_size=tc["batch_size"], sampler=sampler, drop_last=drop_last,
                   **loader_kw),
        DataLoader(val_ds, batch_size=tc["batch_size"] * 2, shuffle=False, **loader_kw),
        lambda: DataLoader(SliceDataset(store, train_rows, tc["normalisation"], None,
                                        with_mask=False),
                           batch_size=tc["batch_size"] * 2, shuffle=False, **loader_kw))


def build_model(cfg: dict, data: FoldData, fast: FastPaths, device: torch.device,
                info: DistInfo) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    """``(net, ddp_net, step_net)``: the model (seeded, on the device, its memory format), its
    DDP wrapper (itself on one process) and what the training step calls (compiled or not)."""
    torch.manual_seed(int(cfg["train"]["seed"]))
    model_opts = {k: v for k, v in cfg["model"].items() if k != "name"}
    net = create_model(cfg["model"]["name"], in_channels=data.store.images.shape[1],
                       n_classes=data.n_classes, **model_opts).to(device)
    if fast.channels_last:
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
    return net, ddp_net, step_net


def start_or_restore(run: RunDir, cfg: dict, data: FoldData, split_path: Path, fold: int,
                     fast: FastPaths, device: torch.device, info: DistInfo, net, optimiser,
                     scheduler, objective, resume: bool) -> Progress:
    """Resume from ``last.pt`` (model, optimiser, scheduler, objective, progress), or begin the
    run folder: the split's copy and ``config.yaml`` (the run record)."""
    if resume and run.resume_state.is_file():
        state = torch.load(run.resume_state, map_location=device, weights_only=True)
        net.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        objective.load_state_dict(state.get("objective"))
        start = state["epoch"] + 1
        progress = Progress(start, run.metrics().iloc[:start].to_dict("records"),
                            state["best"], state["stale"])
        if info.is_main:
            print(f"[train] resuming {run} after epoch {state['epoch'] + 1}")
        return progress
    if info.is_main:
        run.path.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(split_path, run.split_file)
        record = {"config": cfg, "store": data.store.record(),
                  "split": split_record(split_path, data.split, fold),
                  "class_weights": data.weights_np.tolist(), "classes": data.store.classes,
                  "world_size": info.world_size, "device": str(device),
                  "fast_paths": fast.describe(),
                  "versions": _versions()}
        with atomic_path(run.config_file) as tmp:
            tmp.write_text(yaml.safe_dump(record, sort_keys=False))
    return Progress()


def train_epoch(epoch: int, cfg: dict, data: FoldData, ctx: TrainingContext, ddp_net, objective,
                optimiser, info: DistInfo, progress: bool) -> tuple[float, int, dict]:
    """One pass over the training slices, the optimiser stepping every ``accumulate``
    micro-batches; returns ``(summed logged loss, slices seen, summed loss parts)``."""
    tc = cfg["train"]
    _seed_epoch(int(tc["seed"]), epoch, info.rank)
    data.sampler.set_epoch(epoch)
    ctx.step_net.train()
    ctx.net.zero_grad(set_to_none=True)
    running, seen, parts = 0.0, 0, {}
    bar = tqdm(data.train_loader, desc=f"{cfg['model']['name']} epoch {epoch + 1}/{tc['epochs']}",
               disable=not (progress and info.is_main), leave=False)
    n_batches, accumulate = len(data.train_loader), int(tc["accumulate"])
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
                torch.nn.utils.clip_grad_value_(ctx.net.parameters(), tc["grad_clip_value"])
            optimiser.step()
            # all parameters: the objective may use some the optimiser does not step
            ctx.net.zero_grad(set_to_none=True)
        running += float(logged)
        seen += len(y)
        for key, value in batch_parts.items():
            parts[key] = parts.get(key, 0.0) + float(value)
        bar.set_postfix(loss=f"{running / seen:.4f}")
    return running, seen, parts


def save_epoch(run: RunDir, net, optimiser, scheduler, objective, state: Progress, epoch: int,
               improved: bool, extra: dict, selection: str, value: float) -> None:
    """After an epoch: the best model when it improved, ``metrics.csv`` and ``last.pt``."""
    if improved:
        save_model(net, run.checkpoint, extra={**extra, "epoch": epoch + 1, selection: value})
    with atomic_path(run.metrics_file) as tmp:
        pd.DataFrame(state.history).to_csv(tmp, index=False)
    # every epoch re-seeds its RNGs from (seed, epoch, rank): no RNG state to keep
    checkpoint = {"model": net.state_dict(), "optimiser": optimiser.state_dict(),
                  "scheduler": scheduler.state_dict() if scheduler else None,
                  "objective": objective.state_dict(),
                  "epoch": epoch, "best": state.best, "stale": state.stale}
    with atomic_path(run.resume_state) as tmp:
        torch.save(checkpoint, tmp)


def _train(cfg, store_dir: Path, split_path: Path, out: Path, fold: int, resume: bool,
           progress: bool, device: torch.device, info: DistInfo) -> Path:
    tc = cfg["train"]
    run = RunDir(out)
    if tc["deterministic"]:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    fast = FastPaths.from_config(tc["fast"], device, deterministic=tc["deterministic"])
    fast.apply_backend_flags()

    data = build_loaders(tc, store_dir, split_path, fold, fast, info, device)
    net, ddp_net, step_net = build_model(cfg, data, fast, device, info)
    ctx = TrainingContext(
        net=net, step_net=step_net, weights=data.weights, info=info, device=device,
        amp=fast.bf16, channels_last=fast.channels_last, accumulate=int(tc["accumulate"]),
        train_loader=data.train_loader, sampler=data.sampler, run=run, progress=progress,
        epochs=int(tc["epochs"]), make_push_loader=data.make_push_loader)
    objective = build_objective(ctx, tc)
    optimiser = make_optimiser(objective.param_groups(), tc, device)
    scheduler = make_scheduler(optimiser, tc)
    state = start_or_restore(run, cfg, data, split_path, fold, fast, device, info, net,
                             optimiser, scheduler, objective, resume)
    barrier(info)

    store = data.store
    extra = {"input_size": int(store.images.shape[-1]), "normalisation": tc["normalisation"],
             "classes": store.classes, "channels": store.meta.get("channels", []),
             "profile": cfg["profile"], "fold": fold}
    pick = SELECTION[tc["selection"]]
    started = time.time()
    for epoch in range(state.start_epoch, tc["epochs"]):
        t0 = time.time()
        running, seen, parts = train_epoch(epoch, cfg, data, ctx, ddp_net, objective,
                                           optimiser, info, progress)
        if scheduler is not None:
            scheduler.step()
        between = objective.end_of_epoch(epoch)  # e.g. MProtoNet's push + last-layer passes

        val_loss, y_true, y_pred = validate(net, data.val_loader, data.weights, device,
                                            fast.bf16, objective.per_sample_loss)
        scores = classification_scores(y_true, y_pred, data.n_classes)
        row = {"epoch": epoch + 1, "train_loss": running / max(seen, 1), "val_loss": val_loss,
               **{f"val_{k}": v for k, v in scores.items()},
               **{f"train_{k}": v / max(seen, 1) for k, v in parts.items()}, **between,
               "lr": optimiser.param_groups[0]["lr"], "seconds": time.time() - t0}
        state.history.append(row)
        value = val_loss if tc["selection"] == "val_loss" else scores[tc["selection"]]
        # MProtoNet: only models right after a push are selectable
        improved = objective.selectable(epoch) and state.update(value, pick)
        if info.is_main:
            save_epoch(run, net, optimiser, scheduler, objective, state, epoch, improved, extra,
                       tc["selection"], value)
            print(f"[train] {cfg['model']['name']} epoch {epoch + 1}/{tc['epochs']}: "
                  f"train loss {row['train_loss']:.4f}, val loss {val_loss:.4f}, "
                  f"val macro-F1 {scores['macro_f1']:.3f}, "
                  f"{row['seconds']:.1f} s" + (" pushed" if between.get("pushed") else "")
                  + (" *" if improved else ""), flush=True)
        barrier(info)
        if tc["early_stopping"] and state.stale >= int(tc["early_stopping"]):
            break

    if info.is_main:
        save_model(net, run.last_checkpoint, extra={**extra, "epoch": len(state.history)})
        _finish(run, cfg, state.history, tc["selection"], pick, time.time() - started,
                objective)
    barrier(info)
    return out


def _finish(run: RunDir, cfg: dict, history: list[dict], selection: str, pick, seconds: float,
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
    with atomic_path(run.summary_file) as tmp:
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
    save_figure(fig, run.curves)
    plt.close(fig)
