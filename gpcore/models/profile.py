"""Parameter and FLOP counts of a model (FLOPs from ``torch.utils.flop_counter``)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (buffers such as BatchNorm statistics are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: tuple[int, ...] = (1, 4, 240, 240)) -> int:
    """FLOPs (2 per multiply-add) of one eval-mode ``forward_with_heatmap`` call.

    Counts convolutions and matmuls, as ``FlopCounterMode`` does; FFTs, pooling and
    element-wise ops are not counted.
    """
    was_training = model.training
    model.eval()
    x = torch.zeros(input_shape)
    try:
        with FlopCounterMode(display=False) as counter:
            model.forward_with_heatmap(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops()
