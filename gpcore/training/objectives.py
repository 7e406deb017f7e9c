"""Training objectives: what a batch costs, which parameters the optimiser sees, and what
happens between epochs. The engine (:mod:`gpcore.training.engine`) is the same for all.

* :class:`CrossEntropyObjective` - the GP models and ``cnn_gradcam``: class-weighted
  cross-entropy, normalised over the global micro-batch.
* :class:`OneVsRestObjective` - ``train.loss=one_vs_rest``: one sigmoid per class (binary
  cross-entropy against the one-hot label, summed over classes) instead of the softmax.
* :class:`MProtoNetObjective` - MProtoNet (``docs/spec/mprotonet.md`` §3-§4): focal loss,
  cluster and separation costs, mapping loss, online-CAM loss in the joint stage; every
  ``push_every`` epochs a push of the prototypes onto training slices followed by
  ``last_layer_passes`` passes that train ``W_cls`` alone with focal loss + L1.

A model names its objective in its ``objective`` attribute (default ``"cross_entropy"``).

The loss functions are plain functions of tensors, unit-tested on hand cases.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..io import atomic_path
from ..models.base import lse_pool
from ..rundir import RunDir
from .distributed import DistInfo, all_reduce_sum


# --------------------------------------------------------------------------------------------
# loss functions
# --------------------------------------------------------------------------------------------
def focal_per_sample(logits: Tensor, target: Tensor, gamma: float = 2.0) -> Tensor:
    """``(1 - p_b)^gamma * (-log p_b)`` per sample, p_b the softmax probability of the true
    class; ``(B, C), (B,) -> (B,)`` in float32."""
    logp = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None])[:, 0]
    return (1 - logp.exp()) ** gamma * -logp


def focal_loss(logits: Tensor, target: Tensor, weights: Tensor, gamma: float = 2.0) -> Tensor:
    """Class-weighted focal loss ``sum_b w_{y_b} FL_b / sum_b w_{y_b}`` (MProtoNet ``BFL``)."""
    w = weights[target]
    return (w * focal_per_sample(logits, target, gamma)).sum() / w.sum().clamp_min(1e-12)


def own_class_mask(identity: Tensor, target: Tensor) -> Tensor:
    """``(B, K)`` bool: prototype k belongs to the class of sample b (``identity (K, C)``)."""
    return identity[:, target].T.bool()


def cluster_cost(distances: Tensor, target: Tensor, identity: Tensor,
                 sample_weights: Tensor) -> Tensor:
    """``sum_b w_b min_{k in P(y_b)} d_bk`` with ``sample_weights`` w_b summing to 1."""
    own = own_class_mask(identity, target)
    return (distances.float().masked_fill(~own, math.inf).amin(1) * sample_weights).sum()


def separation_cost(distances: Tensor, target: Tensor, identity: Tensor,
                    sample_weights: Tensor) -> Tensor:
    """``sum_b w_b min_{k not in P(y_b)} d_bk`` (enters the total with coefficient -0.08)."""
    own = own_class_mask(identity, target)
    return (distances.float().masked_fill(own, math.inf).amin(1) * sample_weights).sum()


def resize(t: Tensor, scale: float) -> Tensor:
    """The mapping loss's transform T: bilinear resize by ``scale``, align_corners=True."""
    return F.interpolate(t, scale_factor=scale, mode="bilinear", align_corners=True)


def mapping_loss(mapping: Callable[[Tensor], Tensor], z: Tensor, maps: Tensor,
                 scale: float) -> Tensor:
    """``mean|T(M(z)) - M(T(z))| + mean|M(z)|``: equivariance of the mapping module to a
    resize, plus an L1 pull of the maps towards 0. ``mapping`` reruns the mapping module
    (soft masking included) on the resized backbone features."""
    equivariance = (resize(maps, scale) - mapping(resize(z, scale))).float().abs().mean()
    return equivariance + maps.float().abs().mean()


def online_cam_logits(model: nn.Module, z: Tensor, r: float = 10.0) -> Tensor:
    """MProtoNet's online-CAM branch: ``W_cls(lse(p_map[:3](z)) W_map^T)`` with the mapping
    module's ``Conv_map`` weight (``p_map[3]``, K x D) and ``W_cls`` shared -> ``(B, C)``."""
    pooled = lse_pool(model.p_map[:3](z).float(), r)  # in fp32 under autocast
    w_map = model.p_map[3].weight.flatten(1).float()
    return model.last_layer(pooled @ w_map.T)


def last_layer_l1(model: nn.Module) -> Tensor:
    """``||W_cls * (1 - identity^T)||_1``: L1 on the wrong-class connections only."""
    mask = 1 - model.prototype_class_identity.T
    return (model.last_layer.weight * mask).abs().sum()


@torch.no_grad()
def push_prototypes(model: nn.Module, loader, device: torch.device) -> pd.DataFrame:
    """Set every prototype j of class c to ``H_j`` of the class-c training slice with the
    smallest distance ``d_j`` (eval mode, the caller's loader without augmentation).

    Returns one row per prototype: ``prototype, class, row`` (store row, -1 when no slice of
    the class was seen: the prototype is left unchanged), ``patient_id, distance``.
    """
    was_training = model.training
    model.eval()
    identity = model.prototype_class_identity.bool()
    k = identity.shape[0]
    best_d = torch.full((k,), math.inf, device=device)
    best_h = model.prototype_vectors.detach().flatten(1).clone()
    best_row = torch.full((k,), -1, dtype=torch.long)
    best_patient = [""] * k
    try:
        for batch in loader:
            x = batch["image"].to(device)
            y = batch["label"].to(device)
            pooled, distances, _ = model.push_forward(x)
            own = identity[:, y].T  # (B, K)
            d = distances.float().masked_fill(~own, math.inf)
            d_min, b_min = d.min(0)  # first occurrence on ties
            better = d_min < best_d
            if better.any():
                idx = better.nonzero()[:, 0]
                best_d[idx] = d_min[idx]
                best_h[idx] = pooled[b_min[idx], idx].float()
                rows = torch.as_tensor(batch["row"])
                for j in idx.tolist():
                    best_row[j] = int(rows[b_min[j]])
                    best_patient[j] = batch["patient_id"][int(b_min[j])]
        found = best_row >= 0
        model.prototype_vectors.data[found.to(device)] = \
            best_h[found.to(device)].reshape(-1, *model.prototype_vectors.shape[1:]).to(
                model.prototype_vectors.dtype)
    finally:
        model.train(was_training)
    classes = identity.float().argmax(1).tolist()
    return pd.DataFrame({"prototype": range(k), "class": classes, "row": best_row.tolist(),
                         "patient_id": best_patient,
                         "distance": [float(v) if math.isfinite(v) else float("nan")
                                      for v in best_d.tolist()]})


# --------------------------------------------------------------------------------------------
# objectives
# --------------------------------------------------------------------------------------------
@dataclass
class TrainingContext:
    """What an objective may use besides the batch. ``push_loader`` is built on demand."""

    net: nn.Module                      # the model itself (SyncBatchNorm-converted under DDP)
    step_net: nn.Module                 # what the training step calls (DDP / compiled wrapper)
    weights: Tensor                     # (C,) class weights of the fold's training slices
    info: DistInfo
    device: torch.device
    amp: bool
    channels_last: bool
    accumulate: int
    train_loader: DataLoader
    sampler: object
    make_push_loader: Callable[[], DataLoader]
    run: RunDir                        # the run folder (gpcore.rundir.RunDir)
    progress: bool = False
    epochs: int = 1
    _push_loader: DataLoader | None = field(default=None, repr=False)

    @property
    def push_loader(self) -> DataLoader:
        if self._push_loader is None:
            self._push_loader = self.make_push_loader()
        return self._push_loader

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def batch(self, batch: dict) -> tuple[Tensor, Tensor]:
        x = batch["image"].to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, batch["label"].to(self.device, non_blocking=True)

    def sample_weights(self, target: Tensor) -> Tensor:
        """Batch-normalised per-sample weights ``w_{y_b} / sum w`` over the *global*
        micro-batch, times the world size, so that DDP's gradient averaging gives exactly the
        single-process weighted mean."""
        w = self.weights[target]
        denom = all_reduce_sum(w.sum().detach(), self.info).clamp_min(1e-12)
        return w * self.info.world_size / denom


class CrossEntropyObjective:
    """Class-weighted cross-entropy (the GP models' published loss; also ``cnn_gradcam``)."""

    name = "cross_entropy"
    loss_label = "weighted cross-entropy"

    def __init__(self, ctx: TrainingContext, cfg: dict):
        self.ctx = ctx

    def param_groups(self):
        return self.ctx.net.parameters()

    def training_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, dict]:
        """``(loss to backpropagate, sum of per-sample losses to log, parts)``."""
        ctx = self.ctx
        with ctx.autocast():
            logits = ctx.step_net(x)
        per_sample = self.per_sample_loss(logits, y)
        w = ctx.weights[y]
        denom = all_reduce_sum(w.sum().detach(), ctx.info).clamp_min(1e-12)
        loss = (w * per_sample).sum() * ctx.info.world_size / denom / ctx.accumulate
        return loss, per_sample.detach().sum(), {}

    @staticmethod
    def per_sample_loss(logits: Tensor, target: Tensor) -> Tensor:
        """Validation loss per sample (weighted by the class weights in the engine)."""
        return F.cross_entropy(logits.float(), target, reduction="none")

    def end_of_epoch(self, epoch: int) -> dict:
        """Work after the epoch's optimiser steps and LR-scheduler step; metrics to record."""
        return {}

    def selectable(self, epoch: int) -> bool:
        """Whether the model after ``epoch`` (0-based) may be selected as the best."""
        return True

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict | None) -> None:
        pass


class OneVsRestObjective(CrossEntropyObjective):
    """Class-weighted one-vs-rest binary cross-entropy: ``sum_k BCE(logit_k, [y = k])``.

    Why (issue 13, Figshare): under the softmax only logit *differences* count, so evidence
    that every image holds (anatomy) can sit on every class map at no cost. With one sigmoid
    per class and a pooled-map logit (``model.pool=heatmap``) class k's map must stay below 0
    on every pixel of every non-k image: the other classes' images are the negatives of
    multiple-instance learning, and what the classes share is pushed down on every map.
    """

    name = "one_vs_rest"
    loss_label = "weighted one-vs-rest BCE"

    @staticmethod
    def per_sample_loss(logits: Tensor, target: Tensor) -> Tensor:
        """``(B, C), (B,) -> (B,)``: binary cross-entropy of each class's logit against
        ``[target == k]``, summed over the classes, in float32."""
        onehot = F.one_hot(target, logits.shape[1]).float()
        return F.binary_cross_entropy_with_logits(logits.float(), onehot,
                                                  reduction="none").sum(1)


class MProtoNetObjective(CrossEntropyObjective):
    """MProtoNet-2D variant C's training (``docs/spec/mprotonet.md`` §3-§4); options under ``train.mprotonet``.

    Joint stage (every batch): ``FL + 0.8 clst - 0.08 sep + 0.5 map + 0.05 OC``, optimised by
    the engine's joint optimiser, whose parameter groups are backbone, add-on, prototypes
    (weight decay 0) and mapping module; ``W_cls`` is not among them.

    After epochs ``push_every, 2 push_every, ...`` (and after the last epoch): push, then
    ``last_layer_passes`` passes over the training loader in train mode (BatchNorm statistics
    keep updating) optimising ``W_cls`` alone with AdamW (lr ``last_layer_lr``, wd 0; created
    once per run, its state saved for resume) on ``FL + 0.01 L1``. The features are computed
    without gradient there: only ``W_cls`` is optimised, so its gradient is unchanged.
    """

    name = "mprotonet"
    loss_label = "MProtoNet joint loss"

    def __init__(self, ctx: TrainingContext, cfg: dict):
        super().__init__(ctx, cfg)
        self.opts = dict(cfg)
        self.gamma = float(cfg["focal_gamma"])
        self.coef = {k: float(cfg[f"coef_{k}"]) for k in
                     ("cluster", "separation", "mapping", "online_cam", "l1")}
        self.scales = [float(s) for s in cfg["mapping_scales"]]
        self.push_every = int(cfg["push_every"])
        if self.push_every < 1:
            raise ValueError(f"train.mprotonet.push_every must be >= 1, got {self.push_every}")
        net = ctx.net
        self.last_optimiser = torch.optim.AdamW(
            net.last_layer.parameters(), lr=float(cfg["last_layer_lr"]),
            weight_decay=float(cfg.get("last_layer_weight_decay", 0.0)))

    def param_groups(self):
        # lr and weight decay of groups without their own come from the engine's optimiser
        net = self.ctx.net
        return [{"params": net.features.parameters(), "name": "backbone"},
                {"params": net.add_ons.parameters(), "name": "add_ons"},
                {"params": [net.prototype_vectors], "weight_decay": 0.0, "name": "prototypes"},
                {"params": net.p_map.parameters(), "name": "p_map"}]

    def per_sample_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return focal_per_sample(logits, target, self.gamma)

    def _focal(self, logits: Tensor, y: Tensor, w: Tensor) -> Tensor:
        return (w * focal_per_sample(logits, y, self.gamma)).sum()

    def training_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, dict]:
        net, ctx = self.ctx.net, self.ctx
        w = ctx.sample_weights(y)
        scale = self.scales[int(torch.randint(len(self.scales), (1,)))]  # once per batch
        with ctx.autocast():
            out = ctx.step_net(x, return_all=True)
            mapping = mapping_loss(net.mapping, out["z"], out["maps"], scale)
            logits_oc = online_cam_logits(net, out["z"], float(self.opts["online_cam_r"]))
        identity = net.prototype_class_identity
        parts = {"focal": self._focal(out["logits"], y, w),
                 "cluster": cluster_cost(out["distances"], y, identity, w),
                 "separation": separation_cost(out["distances"], y, identity, w),
                 "mapping": mapping,
                 "online_cam": self._focal(logits_oc, y, w)}
        loss = parts["focal"] + sum(self.coef[k] * parts[k] for k in
                                    ("cluster", "separation", "mapping", "online_cam"))
        n = len(y)
        # logged: batch values (class-weighted means) times the batch size; the engine sums
        # them and divides by the number of slices seen
        logged = {k: v.detach() * n for k, v in parts.items()}
        return loss / ctx.accumulate, loss.detach() * n, logged

    # -- between epochs --------------------------------------------------------------------
    def is_push_epoch(self, epoch: int) -> bool:
        return (epoch + 1) % self.push_every == 0 or epoch + 1 == self.ctx.epochs

    def selectable(self, epoch: int) -> bool:
        return self.is_push_epoch(epoch) or not self.opts.get("select_after_push", True)

    def end_of_epoch(self, epoch: int) -> dict:
        if not self.is_push_epoch(epoch):
            return {"pushed": False}
        ctx, net = self.ctx, self.ctx.net
        started = time.time()
        table = push_prototypes(net, ctx.push_loader, ctx.device)
        if ctx.info.enabled:  # every rank pushed over the same slices; keep them bit-equal
            torch.distributed.broadcast(net.prototype_vectors.data, 0)
        if ctx.info.is_main:
            with atomic_path(ctx.run.prototypes_file) as tmp:
                table.assign(epoch=epoch + 1).to_csv(tmp, index=False)
        pushed = time.time()
        loss = float("nan")
        for j in range(int(self.opts["last_layer_passes"])):
            loss = self._last_layer_pass(epoch, j)
        return {"pushed": True, "last_layer_loss": loss, "push_seconds": pushed - started,
                "last_layer_seconds": time.time() - pushed}

    def _last_layer_pass(self, epoch: int, j: int) -> float:
        """One pass over the training loader optimising W_cls on ``FL + coef_l1 * L1``."""
        ctx, net = self.ctx, self.ctx.net
        net.train()
        # a shuffle of its own, distinct from every epoch's (set_epoch(e) for e < epochs)
        ctx.sampler.set_epoch(ctx.epochs * (1 + epoch * int(self.opts["last_layer_passes"]) + j)
                              + epoch)
        weight = net.last_layer.weight
        total, seen = 0.0, 0
        bar = tqdm(ctx.train_loader, desc=f"last layer {j + 1}", leave=False,
                   disable=not (ctx.progress and ctx.info.is_main))
        for batch in bar:
            x, y = ctx.batch(batch)
            with torch.no_grad(), ctx.autocast():
                out = net(x, return_all=True)
            similarity = net.distance_2_similarity(out["distances"].float())
            logits = net.last_layer(similarity)
            w = ctx.sample_weights(y)
            loss = self._focal(logits, y, w) + self.coef["l1"] * last_layer_l1(net)
            self.last_optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if ctx.info.enabled:
                torch.distributed.all_reduce(weight.grad)
                weight.grad /= ctx.info.world_size
            self.last_optimiser.step()
            total += float(loss.detach()) * len(y)
            seen += len(y)
        return total / max(seen, 1)

    def state_dict(self) -> dict:
        return {"last_layer_optimiser": self.last_optimiser.state_dict()}

    def load_state_dict(self, state: dict | None) -> None:
        if state and state.get("last_layer_optimiser"):
            self.last_optimiser.load_state_dict(state["last_layer_optimiser"])


OBJECTIVES = {"cross_entropy": CrossEntropyObjective, "mprotonet": MProtoNetObjective}
#: what ``train.loss`` may put in place of the models' default cross-entropy
LOSSES = {"cross_entropy": CrossEntropyObjective, "one_vs_rest": OneVsRestObjective}


def build_objective(ctx: TrainingContext, train_cfg: dict) -> CrossEntropyObjective:
    """The objective the model asks for (``model.objective``), configured from
    ``train_cfg[<objective name>]`` when the objective has options."""
    name = getattr(ctx.net, "objective", "cross_entropy")
    if name not in OBJECTIVES:
        raise ValueError(f"{type(ctx.net).__name__} asks for objective {name!r}; known: "
                         f"{sorted(OBJECTIVES)}")
    cfg = train_cfg.get(name) or {}
    if name != "cross_entropy" and not cfg:
        raise ValueError(f"objective {name!r} needs a 'train.{name}' section in the training "
                         f"configuration (gpcore/configs/train.yaml, model_train.<model>.{name})")
    loss = train_cfg.get("loss") or "cross_entropy"
    if name == "cross_entropy":
        return LOSSES[loss](ctx, cfg)
    if loss != "cross_entropy":
        raise ValueError(f"train.loss={loss!r} applies to models trained with "
                         f"cross-entropy; {type(ctx.net).__name__} trains with {name!r}")
    return OBJECTIVES[name](ctx, cfg)


__all__ = ["CrossEntropyObjective", "MProtoNetObjective", "OneVsRestObjective", "TrainingContext",
           "build_objective", "cluster_cost", "focal_loss", "focal_per_sample", "last_layer_l1", "lse_pool",
           "mapping_loss", "online_cam_logits", "push_prototypes", "separation_cost"]
