"""Loading and saving weights without unpickling arbitrary objects.

Accepted inputs of :func:`load_weights`:

* the authors' Hugging Face ``pytorch_model.bin`` (keys prefixed ``net.``, ``loss*`` keys);
* their Lightning ``.ckpt`` (``{"state_dict": {"net.…": …, "loss.weight": …}, "hyper_parameters": …}``);
* a plain ``state_dict`` saved with ``torch.save``;
* ``.safetensors``.

Pickle-based files are read with ``torch.load(weights_only=True)``, which refuses any object
other than tensors, containers and primitives (plus ``argparse.Namespace`` hyper-parameters).
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..io import atomic_path

from .reference import infer_model_config

# Wrappers added by training frameworks around the model's own keys ("model.": the authors'
# Hugging Face PreTrainedModel wrappers of their other projects hold the network as self.model).
_PREFIXES = ("net.", "model.", "module.", "_orig_mod.")
# Key renames that keep checkpoints of the reference's out_act variants loadable (its GP_UNet
# head became ``last.0`` when an activation was appended).
_RENAMES = {"gp_unet": (("last.0.", "last."),)}
CONFIG_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read or does not fit the model."""


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a zip checkpoint: the unpickling error itself has to do
        return []


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a checkpoint file into a plain ``{key: tensor}`` dict of the model's own keys.

    Unwraps ``"state_dict"`` (Lightning, some HF exports), strips ``net.`` / ``model.`` /
    ``module.`` / ``_orig_mod.`` prefixes and drops ``loss*`` keys (the class-weight buffer of
    the loss) and non-tensor entries.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        try:
            obj = load_file(path)
        except Exception as err:  # SafetensorError: truncated or not safetensors at all
            raise CheckpointError(f"{path}: not a readable .safetensors file ({err}); "
                                  f"re-download or re-save it") from err
    else:
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            found = _unsafe_globals(path)
            what = f" It references {', '.join(found)}." if found else ""
            raise CheckpointError(
                f"{path}: refusing to unpickle objects other than tensors and plain containers."
                f"{what} If you trust the file, re-save only its weights where it was made, "
                f"e.g. torch.save(ckpt['state_dict'], 'weights.pt'), or convert it to "
                f".safetensors.") from err
        except Exception as err:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
    return extract_state_dict(obj, str(path))


def extract_state_dict(obj, source: str = "checkpoint") -> dict[str, Tensor]:
    """The model weights inside a loaded checkpoint object (see :func:`read_state_dict`)."""
    while isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
    out: dict[str, Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, Tensor):
            continue
        stripped = True
        while stripped:
            stripped = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix):], True
        if key.startswith("loss"):
            continue
        out[key] = value
    if not out:
        raise CheckpointError(f"{source}: holds no tensors")
    return out


def _rename_for(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    renames = _RENAMES.get(getattr(model, "model_name", ""), ())
    out = {}
    for key, value in state.items():
        for old, new in renames:
            if key.startswith(old):
                key = new + key[len(old):]
        out[key] = value
    return out


def _mismatch_message(model: nn.Module, state: dict[str, Tensor], source: str) -> str | None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                   for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if not (missing or unexpected or wrong):
        return None

    def listing(title: str, items: list[str]) -> str:
        if not items:
            return ""
        shown = "\n    ".join(items[:12])
        more = f"\n    … and {len(items) - 12} more" if len(items) > 12 else ""
        return f"\n  {title} ({len(items)}):\n    {shown}{more}"

    guess = infer_model_config({k: tuple(v.shape) for k, v in state.items()})
    if guess:
        args = ", ".join(f"{k}={v!r}" for k, v in guess[1].items())
        hint = f"\n  The checkpoint looks like create_model({guess[0]!r}, {args})."
    else:
        hint = "\n  Its keys match none of gpcore's models."
    name = getattr(model, "model_name", type(model).__name__)
    return (f"{source}: weights do not fit {name} {getattr(model, 'config', '')}"
            f"{listing('missing keys', missing)}{listing('unexpected keys', unexpected)}"
            f"{listing('shape mismatches', wrong)}{hint}")


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a checkpoint file strictly into ``model`` (in place) and return the model.

    Raises :class:`CheckpointError` listing missing, unexpected and mis-shaped keys and the
    model configuration the checkpoint appears to need.
    """
    state = _rename_for(model, read_state_dict(path))
    problem = _mismatch_message(model, state, str(path))
    if problem:
        raise CheckpointError(problem)
    model.load_state_dict(state, strict=True)
    return model


def config_path(weights_path: str | os.PathLike) -> Path:
    """The JSON written beside ``weights.safetensors``: ``weights.json``."""
    return Path(weights_path).with_suffix(".json")


def save_model(model: nn.Module, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``path`` (safetensors weights) and ``path.json`` (model name and config).

    ``extra``: JSON-serialisable facts about how the model was trained that inference needs
    (e.g. ``{"input_size": 96, "normalisation": "max", "classes": [...], "channels": [...]}``),
    stored under ``"extra"``; read back with :func:`read_checkpoint_meta`.

    Both are written to temporary names and renamed, so an interrupted save never leaves a
    half-written pair. ``create_model(checkpoint=path)`` rebuilds the model.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: save_model writes safetensors; use a .safetensors name")
    path.parent.mkdir(parents=True, exist_ok=True)
    from .. import __version__

    meta = {"format": CONFIG_FORMAT, "model": model.model_name, "config": model.config,
            "gpcore_version": __version__, "extra": extra or {}}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # the config is renamed into place after the weights: a pair is never half new
    with atomic_path(config_path(path)) as tmp_c:
        with atomic_path(path) as tmp_w:
            save_file(state, tmp_w, metadata={"model": model.model_name})
        tmp_c.write_text(json.dumps(meta, indent=2) + "\n")
    return path


def read_checkpoint_meta(weights_path: str | os.PathLike) -> dict:
    """The JSON beside a saved model (``{"model", "config", "extra", ...}``); ``{}`` if none."""
    cfg_file = config_path(weights_path)
    return json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}


def read_model_config(weights_path: str | os.PathLike) -> tuple[str, dict]:
    """``(model name, cfg)`` for a checkpoint: from its JSON if present, else from its keys."""
    cfg_file = config_path(weights_path)
    if cfg_file.is_file():
        meta = json.loads(cfg_file.read_text())
        if meta.get("format") != CONFIG_FORMAT or "model" not in meta:
            raise CheckpointError(f"{cfg_file}: not a gpcore model config (format "
                                  f"{meta.get('format')!r}); delete it to infer from the weights")
        return meta["model"], dict(meta.get("config", {}))
    state = read_state_dict(weights_path)
    guess = infer_model_config({k: tuple(v.shape) for k, v in state.items()})
    if guess is None:
        raise CheckpointError(f"{weights_path}: no {cfg_file.name} beside it and its keys match "
                              f"none of gpcore's models; pass the model name to create_model")
    return guess
