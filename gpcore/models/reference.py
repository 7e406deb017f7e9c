"""Bridges to the reference code (soumickmj/GPModels): constructor keywords and checkpoint keys.

* :func:`from_reference_kwargs` turns a reference constructor call (as in the paper's
  ``classifier.py`` or the test-vector JSON) into ``(name, cfg)`` for :func:`create_model`.
* :func:`infer_model_config` reads the architecture off a state_dict's keys and shapes, so a
  checkpoint without a config can be rebuilt, and a mismatched one gets a suggestion.
"""
from __future__ import annotations

import math
import re

REFERENCE_CLASSES = {"GP_UNet": "gp_unet", "GP_ShuffleUNet": "gp_shuffle_unet",
                     "GP_ReconResNet": "gp_recon_resnet"}


def _dropout(value, name: str) -> float:
    # The reference passes booleans; True means "the paper's dropout", 0.5 (for ReconResNet it
    # silently became p=1.0, defect D1 - weights load the same either way).
    if isinstance(value, bool):
        return 0.5 if value else 0.0
    return float(value)


def _out_act(value):
    return None if value in (None, "None") else value


def _require(kwargs: dict, key: str, allowed, cls: str) -> None:
    if key in kwargs and kwargs[key] not in allowed:
        raise ValueError(f"{cls}({key}={kwargs[key]!r}) is not supported by gpcore "
                         f"(supported: {allowed})")


def from_reference_kwargs(reference_class: str, kwargs: dict) -> tuple[str, dict]:
    """Map a reference constructor call to gpcore's ``(model name, cfg)``.

    Reference defaults (1 input channel, 1 class, no dropout, ...) apply to keywords not given,
    so ``from_reference_kwargs("GP_UNet", {})`` is the reference's ``GP_UNet()``.
    """
    kw = dict(kwargs)
    if reference_class == "GP_UNet":
        _require(kw, "padding", (True, 1), reference_class)
        up = kw.get("up_mode", "upconv")
        return "gp_unet", {
            "in_channels": kw.get("in_channels", 1), "n_classes": kw.get("n_classes", 1),
            "depth": kw.get("depth", 3), "wf": kw.get("wf", 6),
            "up_mode": "sinc" if "inc" in up else up,
            "dropout": _dropout(kw.get("dropout", False), "dropout"),
            "batch_norm": bool(kw.get("batch_norm", False)),
            "activation": "relu" if kw.get("Relu", "Relu") == "Relu" else "prelu",
            "out_act": _out_act(kw.get("out_act", "None"))}
    if reference_class == "GP_ReconResNet":
        _require(kw, "forwardV", (0,), reference_class)
        _require(kw, "post_interp_convtrans", (False,), reference_class)
        _require(kw, "is3D", (False,), reference_class)
        return "gp_recon_resnet", {
            "in_channels": kw.get("in_channels", 1), "n_classes": kw.get("n_classes", 1),
            "res_blocks": kw.get("res_blocks", 14),
            "starting_nfeatures": kw.get("starting_nfeatures", 64),
            "updown_blocks": kw.get("updown_blocks", 2),
            "res_drop_prob": _dropout(kw.get("res_drop_prob", 0.2), "res_drop_prob"),
            "up_mode": kw.get("upinterp_algo", "upconv"),
            "norm": "batch" if kw.get("do_batchnorm", False) else "instance",
            "activation": "prelu" if kw.get("is_relu_leaky", True) else "relu",
            "out_act": _out_act(kw.get("out_act", "softmax"))}
    if reference_class == "GP_ShuffleUNet":
        _require(kw, "d", (2,), reference_class)
        _require(kw, "kernel_size", (3,), reference_class)
        _require(kw, "stride", (1,), reference_class)
        return "gp_shuffle_unet", {
            "in_channels": kw.get("in_ch", 1), "n_classes": kw.get("out_ch", 1),
            "num_features": kw.get("num_features", 64), "n_levels": kw.get("n_levels", 3),
            "dropout": _dropout(kw.get("dropout", False), "dropout"),
            "out_act": _out_act(kw.get("out_act", "softmax"))}
    raise KeyError(f"unknown reference class {reference_class!r}; "
                   f"known: {', '.join(REFERENCE_CLASSES)}")


def _count(keys, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.match(k))})


def infer_model_config(shapes: dict[str, tuple[int, ...]]) -> tuple[str, dict] | None:
    """Guess ``(model name, cfg)`` from a state_dict's ``{key: shape}``; ``None`` if unknown.

    Dropout, pooling and output activation leave no trace in the weights and keep their
    defaults; verify the guess by loading strictly.
    """
    keys = set(shapes)
    if "down_path.0.block.0.weight" in keys:
        first = shapes["down_path.0.block.0.weight"]
        if "up_path.0.up.1.weight" in keys:
            up = "bilinear"
        elif len(shapes.get("up_path.0.up.weight", ())) == 4 and \
                shapes["up_path.0.up.weight"][2] == 2:
            up = "upconv"
        else:
            up = "sinc"
        last = "last.weight" if "last.weight" in keys else "last.0.weight"
        return "gp_unet", {
            "in_channels": first[1], "n_classes": shapes[last][0],
            "depth": _count(keys, r"down_path\.(\d+)\."), "wf": int(math.log2(first[0])),
            "up_mode": up, "batch_norm": "down_path.0.block.2.running_mean" in keys,
            "activation": "prelu" if "down_path.0.block.1.weight" in keys else "relu"}
    if "conv_inp.conv_1.weight" in keys:
        first = shapes["conv_inp.conv_1.weight"]
        return "gp_shuffle_unet", {
            "in_channels": first[1], "n_classes": shapes["out.weight"][0],
            "num_features": first[0], "n_levels": _count(keys, r"wave_down\.(\d+)\.")}
    if "intialConv.1.weight" in keys:
        first = shapes["intialConv.1.weight"]
        return "gp_recon_resnet", {
            "in_channels": first[1], "n_classes": shapes["finalconv.0.weight"][0],
            "res_blocks": _count(keys, r"resblocks\.(\d+)\."), "starting_nfeatures": first[0],
            "updown_blocks": _count(keys, r"downsam\.(\d+)\."),
            "up_mode": "upconv" if "upsam.0.conv_block.0.weight" in keys else "sinc",
            "norm": "batch" if "intialConv.2.running_mean" in keys else "instance",
            "activation": "prelu" if "intialConv.3.weight" in keys else "relu"}
    return None


def parse_reference_call(call: str) -> tuple[str, dict]:
    """``"GP_UNet(in_channels=4, up_mode='sinc')"`` -> ``("GP_UNet", {...})``, literals only."""
    import ast

    node = ast.parse(call.strip(), mode="eval").body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.args:
        raise ValueError(f"not a keyword-only constructor call: {call!r}")
    return node.func.id, {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}


def read_state_dict_listing(path) -> tuple[str, dict[str, tuple[tuple[int, ...], str]]]:
    """Read a ``reference/state_dicts/*.txt`` listing.

    Format: a ``# Class(kwargs)`` line, other ``#`` comments, then ``key (shape) dtype`` lines.
    Returns the constructor call and ``{key: (shape, dtype)}`` in listing order.
    """
    from pathlib import Path
    import ast

    call, entries = None, {}
    for line in Path(path).read_text().splitlines():
        if line.startswith("#"):
            if call is None and "(" in line:
                call = line[1:].strip()
            continue
        if not line.strip():
            continue
        key, rest = line.split(" ", 1)
        shape, dtype = rest.rsplit(" ", 1)
        entries[key] = (tuple(ast.literal_eval(shape)), dtype)
    if call is None:
        raise ValueError(f"{path}: no '# Class(kwargs)' header line")
    return call, entries
