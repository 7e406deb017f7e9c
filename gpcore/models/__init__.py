"""GP classifiers (GP-UNet, GP-ShuffleUNet, GP-ReconResNet) and the MProtoNet baselines
(``mprotonet``: MProtoNet-2D variant C; ``cnn_gradcam``: the CNN explained by Grad-CAM).

>>> from gpcore.models import create_model, list_models
>>> model = create_model("gp_unet")                  # paper configuration
>>> logits = model(x)                                # (B, 3)
>>> logits, heatmap = model.forward_with_heatmap(x)  # (B, 3), (B, 3, H, W)
>>> create_model("mprotonet")                        # resnet152[:6], 45 prototypes
"""
from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from . import cnn, gp_recon_resnet, gp_shuffle_unet, gp_unet, mprotonet  # noqa: F401  (registers)
from .base import GPClassifier
from .profile import count_flops, count_parameters, model_summary
from .checkpoints import (CheckpointError, load_weights, read_checkpoint_meta, read_model_config,
                          read_state_dict, save_model)
from .gp_recon_resnet import GPReconResNet
from .gp_shuffle_unet import GPShuffleUNet
from .gp_unet import GPUNet
from .hub import from_hub, is_hub_uri, resolve_checkpoint
from .cnn import CNNGradCAM
from .mprotonet import MProtoNet2D
from .reference import from_reference_kwargs, infer_model_config
from .registry import build_model, list_models, register_model


def create_model(name: str | None = None, *, checkpoint: str | os.PathLike | None = None,
                 **cfg) -> nn.Module:
    """Build a registered model, optionally with weights.

    Args:
        name: a name from :func:`list_models`. May be omitted when ``checkpoint`` is given: the
            model is then rebuilt from the JSON written by :func:`save_model` beside it, or,
            for a foreign checkpoint, from its keys and shapes.
        checkpoint: any file :func:`load_weights` accepts, or a Hub model
            ``hf://owner/name[@revision]`` (:func:`gpcore.models.hub.resolve_checkpoint`).
        **cfg: constructor options; they override a checkpoint's saved config.
    """
    if is_hub_uri(checkpoint):
        checkpoint, meta = resolve_checkpoint(checkpoint)
        if name in (None, meta["model"]):
            name, cfg = meta["model"], {**meta["config"], **cfg}
    if name is None:
        if checkpoint is None:
            raise ValueError(f"create_model needs a model name ({', '.join(list_models())}) "
                             f"or a checkpoint")
        name, saved = read_model_config(checkpoint)
        cfg = {**saved, **cfg}
    model = build_model(name, **cfg)
    if checkpoint is not None:
        load_weights(model, checkpoint)
    return model


def read_config_file(path: str | os.PathLike) -> tuple[str, dict]:
    """``(model name, cfg)`` from a YAML file ``{model: NAME, config: {...}}`` (``gpcore/configs/models``)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or "model" not in data:
        raise ValueError(f"{path}: expected 'model: NAME' and an optional 'config:' mapping")
    return data["model"], dict(data.get("config") or {})


def paper_config(name: str) -> dict:
    """The published configuration of model ``name`` (``gpcore/configs/models/<name>.yaml``,
    the reference's constructor call as gpcore options): what ``gpcore models`` lists."""
    from ..configs import CONFIGS

    path = CONFIGS / "models" / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(f"{path}: no paper configuration for model {name!r}")
    model, cfg = read_config_file(path)
    if model != name:
        raise ValueError(f"{path}: names model {model!r}, not {name!r}")
    return cfg


__all__ = ["CNNGradCAM", "CheckpointError", "GPClassifier", "GPReconResNet", "GPShuffleUNet",
           "GPUNet", "MProtoNet2D",
           "create_model", "from_hub", "from_reference_kwargs", "infer_model_config",
           "list_models",
           "load_weights", "paper_config", "read_checkpoint_meta", "read_config_file", "read_state_dict",
           "register_model", "resolve_checkpoint", "save_model"]
