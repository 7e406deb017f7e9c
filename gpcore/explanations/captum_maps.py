"""Captum occlusion and guided-backpropagation maps for any model of the registry.

Captum needs a logits-only model in eval mode: :class:`LogitsModel` gives it one (the GP
models already return logits from ``model(x)``; the wrapper also freezes eval mode and keeps
Captum's hooks off the caller's object).

Guided backpropagation only changes the backward pass of ``nn.ReLU`` modules. GP-UNet and
GP-ShuffleUNet rectify with ``nn.ReLU`` modules, so their maps are guided; GP-ReconResNet uses
PReLU, which Captum leaves alone, so its "guided backprop" map is the plain input gradient.
:func:`guided_backprop_note` says which applies, for the outputs to state.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class LogitsModel(nn.Module):
    """``(B, C, H, W) -> (B, K)`` float32 logits of ``model``, in eval mode.

    ``autocast`` (e.g. ``torch.bfloat16``): the forward runs under ``torch.autocast`` of the
    input's device and, as in training's fast path, in channels-last layout (the model is
    converted in place) - on AMX CPUs and GPUs about an order of magnitude faster than fp32 for
    these small convolutions; ``None``: plain fp32.
    """

    def __init__(self, model: nn.Module, autocast: torch.dtype | None = None):
        super().__init__()
        self.model = model.eval()
        self.autocast = autocast
        if autocast is not None:
            self.model.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        if self.autocast is None:
            out = self.model(x)
        else:
            with torch.autocast(x.device.type, dtype=self.autocast):
                out = self.model(x.contiguous(memory_format=torch.channels_last))
        return (out[0] if isinstance(out, tuple) else out).float()


def guided_backprop_note(model: nn.Module) -> str:
    relu = sum(isinstance(m, nn.ReLU) for m in model.modules())
    prelu = sum(isinstance(m, nn.PReLU) for m in model.modules())
    if relu and not prelu:
        return f"guided: {relu} nn.ReLU modules modified"
    if prelu and not relu:
        return (f"not guided: the model rectifies with {prelu} PReLU modules, which guided "
                f"backpropagation does not modify; the map is the plain input gradient")
    return f"partly guided: {relu} nn.ReLU modified, {prelu} PReLU unmodified"


def occlusion_maps(model: nn.Module, images: Tensor, target: Tensor, window: int = 11,
                   stride: int = 5, baseline: float = 0.0, per_eval: int = 32,
                   autocast: torch.dtype | None = None) -> Tensor:
    """Occlusion attributions ``(B, H, W)``: the drop of the target logit when a
    ``window × window`` patch of every contrast is set to ``baseline`` (0 = background under
    max-normalisation), sliding by ``stride``, averaged over the windows covering a pixel.
    ``autocast``: see :class:`LogitsModel`."""
    from captum.attr import Occlusion

    c = images.shape[1]
    attr = Occlusion(LogitsModel(model, autocast)).attribute(
        images, target=target, sliding_window_shapes=(c, window, window),
        strides=(c, stride, stride), baselines=baseline, perturbations_per_eval=per_eval)
    return attr.mean(1).detach()


def guided_backprop_maps(model: nn.Module, images: Tensor, target: Tensor,
                         autocast: torch.dtype | None = None) -> Tensor:
    """Guided-backpropagation saliency ``(B, H, W)``: the sum over contrasts of the absolute
    attribution of the target logit (see :func:`guided_backprop_note`; ``autocast``: see
    :class:`LogitsModel`)."""
    from captum.attr import GuidedBackprop

    x = images.clone().requires_grad_(True)
    attr = GuidedBackprop(LogitsModel(model, autocast)).attribute(x, target=target)
    return attr.float().abs().sum(1).detach()
