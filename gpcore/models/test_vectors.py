"""The reference's numeric test vectors (``reference/vectors/*.json`` + ``.npz``).

Each vector holds the weights ``w/<key>``, an input ``x`` ``(2, 4, 48, 40)`` and the expected
eval-mode ``logits`` ``(2, 3)`` and ``heatmap`` ``(2, 3, 48, 40)`` of a small-width model.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .reference import from_reference_kwargs
from .registry import build_model


def load_vector(json_path: str | Path) -> dict:
    """``{"name", "cfg", "state_dict", "x", "logits", "heatmap"}`` of one test vector."""
    json_path = Path(json_path)
    meta = json.loads(json_path.read_text())
    name, cfg = from_reference_kwargs(meta["reference_class"], meta["kwargs"])
    with np.load(json_path.with_suffix(".npz")) as arrays:
        data = {k: torch.from_numpy(arrays[k]) for k in arrays.files}
    return {"name": name, "cfg": cfg,
            "state_dict": {k[2:]: v for k, v in data.items() if k.startswith("w/")},
            "x": data["x"], "logits": data["logits"], "heatmap": data["heatmap"]}


@torch.no_grad()
def check_vector(json_path: str | Path, device: str = "cpu") -> dict:
    """Run one vector; return the max abs errors relative to ``max |expected|``."""
    vec = load_vector(json_path)
    model = build_model(vec["name"], **vec["cfg"])
    model.load_state_dict(vec["state_dict"], strict=True)
    model.to(device).eval()
    logits, heatmap = model.forward_with_heatmap(vec["x"].to(device))

    def rel(got: torch.Tensor, want: torch.Tensor) -> float:
        return float((got.cpu() - want).abs().max() / want.abs().max())

    return {"vector": Path(json_path).stem, "model": vec["name"], "device": device,
            "logits_rel_err": rel(logits, vec["logits"]),
            "heatmap_rel_err": rel(heatmap, vec["heatmap"])}
