"""Parameter and FLOP counts of the models (FLOPs from ``torch.utils.flop_counter``)."""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .registry import build_model, list_models


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (buffers such as BatchNorm statistics are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flops_of(step) -> int:
    """FLOPs (2 per multiply-add) that calling ``step()`` performs: convolutions and matmuls as
    ``FlopCounterMode`` counts them (FFTs, pooling and element-wise ops are not counted)."""
    from .resample import fft_route

    with fft_route(), FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: tuple[int, ...] = (1, 4, 240, 240)) -> int:
    """FLOPs (2 per multiply-add) of one eval-mode ``forward_with_heatmap`` call.

    Counts convolutions and matmuls, as ``FlopCounterMode`` does; FFTs, pooling and
    element-wise ops are not counted. A model on the ``meta`` device is counted from shapes
    alone, without computing anything.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        return flops_of(lambda: model.forward_with_heatmap(torch.zeros(input_shape, device=device)))
    finally:
        model.train(was_training)


def model_summary(size: int = 240, names: list[str] | None = None) -> pd.DataFrame:
    """One row per model in its paper configuration: parameters and GFLOPs per 4×size×size
    slice (logits + heatmap), counted on the meta device (instant, no memory)."""
    rows = []
    for name in names or list_models():
        from . import paper_config

        with torch.device("meta"):
            model = build_model(name, **paper_config(name))
        rows.append({"model": name, "architecture": model.display_name,
                     "parameters": count_parameters(model),
                     "gflops_per_slice": count_flops(model, (1, model.in_channels, size, size))
                     / 1e9})
    return pd.DataFrame(rows)
