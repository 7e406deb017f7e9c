"""The MProtoNet paper's CNN baseline in 2D (aywi/mprotonet ``CNN3D``), explained by Grad-CAM.

Architecture: the same ResNet cut as MProtoNet (resnet152[:6], 4-channel conv1, random init,
Kaiming fan-out init) -> add-on ``1x1 conv(512->128) - BN - ReLU - 1x1 conv(128->128) - BN -
ReLU`` -> global average pooling -> ``Linear(128 -> C, no bias)``. Trained like the GP models
(class-weighted cross-entropy; the reference trained it with its class-balanced focal loss).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import record_config
from .registry import register_model
from .resnet import init_conv, resnet_features


def last_conv(model: nn.Module) -> nn.Conv2d:
    """The last ``nn.Conv2d`` in ``named_modules`` order (the reference's Grad-CAM layer)."""
    convs = [m for _, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer for Grad-CAM")
    return convs[-1]


def gradcam_maps(model: nn.Module, x: Tensor, layer: nn.Module, n_classes: int) -> Tensor:
    """Grad-CAM of every class, ``(B, n_classes, H, W)``: Captum ``LayerGradCam(model, layer)``
    with ``relu_attributions=True``, up-sampled with ``LayerAttribution.interpolate(...,
    "bilinear")`` (align_corners=False), one attribution call per class.

    Works inside ``torch.inference_mode()`` and ``torch.no_grad()``: gradients are switched
    back on and ``x`` is cloned into a normal tensor. Uses the model's current mode.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    with torch.inference_mode(False), torch.enable_grad():
        inp = x.detach().clone().requires_grad_(True)
        cam = LayerGradCam(model, layer)
        maps = []
        for c in range(n_classes):
            attr = cam.attribute(inp, target=c, relu_attributions=True)
            maps.append(LayerAttribution.interpolate(attr, tuple(x.shape[2:]), "bilinear"))
        return torch.cat(maps, dim=1).detach()


@register_model("cnn_gradcam")
class CNNGradCAM(nn.Module):
    """ResNet-cut CNN with a GAP + Linear head; heatmaps are Grad-CAM maps.

    ``model(x)`` returns logits ``(B, C)`` in train and eval mode. ``forward_with_heatmap(x)``
    returns ``(logits, heatmap (B, C, H, W))``, heatmap channel c = Grad-CAM of class c on the
    last conv (``add_ons[3]``), ReLU'd and bilinearly up-sampled to the input size.

    Grad-CAM here is **not** proportional to CAM: CAM needs the pooled map to enter the linear
    head directly, but ``add_ons[3]`` is followed by BatchNorm and ReLU before the global
    average pooling, so the gradient of a logit with respect to the conv output is
    ``W_fc[c, k] * bn_scale_k * [BN(A)_k(v) > 0] / (h w)``: the ReLU gate varies over positions,
    and Grad-CAM's channel weights (the spatial mean of that gradient) differ from the
    ``W_fc[c, k]`` CAM would use, as does the un-gated, un-normalised ``A``.

    Args:
        in_channels, n_classes: input contrasts and classes.
        depth, width, n_layers: the ResNet cut (see :mod:`gpcore.models.resnet`).
        hidden: add-on channels (128).
    """

    display_name = "CNN (Grad-CAM)"

    def __init__(self, in_channels: int = 4, n_classes: int = 3, depth: int = 152,
                 width: int = 64, n_layers: int = 6, hidden: int = 128):
        super().__init__()
        self.config = record_config(locals())
        self.in_channels, self.n_classes = in_channels, n_classes
        self.features = resnet_features(depth, in_channels, width, n_layers)
        c = self.features.out_channels
        self.add_ons = nn.Sequential(
            nn.Conv2d(c, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.fc = nn.Linear(hidden, n_classes, bias=False)
        init_conv(self.add_ons)

    def check_spatial_size(self, h: int, w: int) -> None:
        need = self.features.stride
        if h < need or w < need:
            raise ValueError(f"{self.display_name} down-samples by {need}: needs H and W >= "
                             f"{need}, got {h}×{w}")

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W) -> (B, C)`` logits."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self.display_name} expects (B, {self.in_channels}, H, W) slices, "
                             f"got shape {tuple(x.shape)}")
        self.check_spatial_size(int(x.shape[2]), int(x.shape[3]))
        return self.fc(self.add_ons(self.features(x)))

    @property
    def gradcam_layer(self) -> nn.Conv2d:
        return last_conv(self)

    def forward_with_heatmap(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits (B, C), Grad-CAM heatmap (B, C, H, W))``; see the class docstring."""
        logits = self(x)
        return logits, gradcam_maps(self, x, self.gradcam_layer, self.n_classes)
