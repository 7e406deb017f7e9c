"""The one model contract every registered model satisfies (the three GP models and both
baselines alike), so prediction, evaluation, explanations, the explorer and ``gpcore segment``
treat them the same way, as pytorch-grad-cam's methods share ``BaseCAM``."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class HeatmapClassifier(Protocol):
    """A slice classifier with one heatmap per class.

    ``model(x)``: ``(B, C_in, H, W) -> logits (B, K)``;
    ``model.forward_with_heatmap(x)``: ``(logits (B, K), heatmaps (B, K, H, W))`` at the
    input's resolution (GP models: their own maps; baselines: Grad-CAM / prototype maps).
    """

    model_name: str          # the registry name (set by ``@register_model``)
    display_name: str        # human-readable, e.g. "GP-UNet", used in messages and figures
    in_channels: int         # input contrasts C_in
    n_classes: int           # classes K scored
    config: dict             # the constructor options, as saved with the weights

    def forward_with_heatmap(self, x: Tensor) -> tuple[Tensor, Tensor]: ...

    def check_spatial_size(self, h: int, w: int) -> None:
        """Raise ``ValueError`` naming the sizes the model takes when it cannot take h x w."""


#: what a model class must define itself (instance attributes are checked on instances)
CLASS_MEMBERS = ("display_name", "forward", "forward_with_heatmap", "check_spatial_size")


def check_model_class(cls: type) -> None:
    """Raise ``TypeError`` unless ``cls`` defines the contract's class-level members."""
    missing = [m for m in CLASS_MEMBERS if not hasattr(cls, m)]
    if missing:
        raise TypeError(f"{cls.__name__} does not satisfy gpcore's model contract "
                        f"(gpcore.models.contract.HeatmapClassifier): missing {missing}")
