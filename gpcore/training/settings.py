"""The training settings as typed dataclasses: what ``train:`` (``gpcore/configs/train.yaml``,
the profile, ``KEY=VALUE`` overrides) may hold and of which type. The values' defaults live
in ``train.yaml``; :func:`check_train` validates a resolved ``train`` section against these
types, so a typo (``train.epoch=3``) or a wrong type (``train.epochs=three``) raises naming
the valid keys or the type wanted, instead of being ignored.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Literal, Optional, Union

Auto = Literal["auto"]


@dataclass(frozen=True)
class FastSettings:
    """``train.fast``: each fast path on, off or ``auto`` (where it was measured to help)."""

    bf16: Union[bool, Auto]
    channels_last: Union[bool, Auto]
    compile: bool
    cudnn_benchmark: Union[bool, Auto]
    pin_memory: Union[bool, Auto]
    persistent_workers: bool


@dataclass(frozen=True)
class MProtoNetSettings:
    """``train.mprotonet``: MProtoNet's joint loss, pushes and last-layer passes."""

    focal_gamma: float
    coef_cluster: float
    coef_separation: float
    coef_mapping: float
    coef_online_cam: float
    coef_l1: float
    online_cam_r: float
    mapping_scales: list[float]
    push_every: int
    last_layer_passes: int
    last_layer_lr: float
    select_after_push: bool


@dataclass(frozen=True)
class TrainSettings:
    """``train``: one run's training settings (the paper's are ``train.yaml``'s defaults)."""

    epochs: int
    batch_size: int
    accumulate: int
    optimizer: Literal["adam", "adamw"]
    lr: float
    weight_decay: float
    grad_clip_value: Optional[float]
    class_weights: Literal["balanced", "none"]
    augment: bool
    channel_scale: float
    normalisation: Literal["none", "max", "zscore", "median", "percentile"]  # data.normalise.MODES
    selection: Literal["macro_f1", "balanced_accuracy", "accuracy", "val_loss"]
    early_stopping: Optional[int]
    lr_schedule: Optional[Literal["none", "cosine", "warmup_cosine"]]
    warmup_fraction: float
    drop_last: bool
    train_slice_step: int
    min_brain_fraction: float
    class_sampling_power: float
    seed: int
    deterministic: bool
    num_workers: int
    device: str
    fast: FastSettings
    mprotonet: Optional[MProtoNetSettings] = None
    loss: Literal["cross_entropy", "one_vs_rest"] = "cross_entropy"


def _describe(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is Union:
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _fits(value, tp) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin is Union:
        return any(_fits(value, a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if tp is type(None):
        return value is None
    if dataclasses.is_dataclass(tp):
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def check_section(values: dict, cls, where: str, partial: bool = False) -> None:
    """Raise :class:`gpcore.errors.ConfigError` when ``values`` holds a key that ``cls`` does
    not declare (naming the valid ones) or a value of another type; with ``partial``, keys
    may be missing (a profile's or override's part of a section)."""
    from ..configs import check_keys
    from ..errors import ConfigError

    hints = typing.get_type_hints(cls)
    check_keys(values, hints, where)
    for f in dataclasses.fields(cls):
        if f.name not in values:
            if not partial and f.default is dataclasses.MISSING:
                raise ConfigError(f"{where}: {f.name} is missing")
            continue
        value, tp = values[f.name], hints[f.name]
        if not _fits(value, tp):
            raise ConfigError(f"{where}.{f.name}: expected {_describe(tp)}, got {value!r}")
        inner = [a for a in (typing.get_args(tp) or (tp,)) if dataclasses.is_dataclass(a)]
        if inner and isinstance(value, dict):
            check_section(value, inner[0], f"{where}.{f.name}", partial)


def check_train(train: dict, where: str) -> TrainSettings:
    """A resolved ``train`` section, validated, as :class:`TrainSettings`."""
    check_section(train, TrainSettings, where)
    values = dict(train)
    values["fast"] = FastSettings(**train["fast"])
    if train.get("mprotonet") is not None:
        values["mprotonet"] = MProtoNetSettings(**train["mprotonet"])
    return TrainSettings(**values)
