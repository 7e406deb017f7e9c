"""The global-pooling (GP) head shared by all GP classifiers.

A GP classifier computes final features ``F`` of shape ``(B, C_f, H, W)`` and a 1x1 conv
``head``. Two pooling variants:

* ``pool="features"`` (as published): ``logits = head(GMP(F))`` - global max pooling of the
  features *before* the 1x1 conv; ``heatmap = head(F)`` is a CAM-style projection, so in general
  ``logit_c != max heatmap_c``.
* ``pool="heatmap"`` (faithful variant): ``heatmap = head(F)`` and each logit is the global
  pooling of its own heatmap (``"max"``; ``"lse"`` log-sum-exp with temperature ``lse_r``;
  ``"topk"`` the mean of its ``topk_fraction`` highest pixels), so the heatmap drives the
  decision by construction. Max pooling sends the gradient to one pixel per map; top-k
  spreads it over a tumour-sized region and, unlike LSE, does not depend on the map's scale.

``pool_region="brain"`` pools over the brain only (pixels where some input contrast is
non-zero; the whole slice if none is): outside it, the zero background offers every map a
constant canvas on which a network with a slice-wide receptive field can write "this slice
holds a tumour" far from the tumour - the failure of the quick runs whose maps peaked
outside the brain (docs/recipe.md). The heatmap itself is returned unmasked.

``background_class=c`` (e.g. Healthy, 0) makes class ``c`` the *background* of multiple-
instance learning: its logit is the head's bias ``b_c`` alone and its heatmap that constant,
so "no tumour" is what is left when no tumour map is high anywhere. Pooled like the others,
the Healthy map has to be high on a tumour slice's healthy tissue too unless it is told the
slice holds a tumour somewhere - a non-local quantity that the shared features then carry
into the tumour maps (docs/recipe.md). The head keeps its shape (``state_dict`` unchanged);
the weight row of ``c`` receives no gradient.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

POOLS = ("features", "heatmap")
#: stands in for -inf outside the pooling region (finite: no nan in LSE / bf16)
_LOW = -1.0e4
HEATMAP_POOLS = ("max", "lse", "topk")
POOL_REGIONS = ("image", "brain")
OUT_ACTS = (None, "sigmoid", "softmax", "relu", "tanh")


def check_probability(p: float, name: str) -> float:
    """Validate a dropout probability; the reference passed ``True`` (= p 1.0, defect D1)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(
            f"{name} must be a float probability in [0, 1), got {p!r}; "
            f"pass 0.5 for the paper's dropout or 0.0 for none (booleans are rejected because "
            f"the reference's True silently meant p=1.0)"
        )
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {p}; p=1 zeroes every channel in training")
    return float(p)


def make_activation(kind: str) -> nn.Module:
    """``"relu"`` or ``"prelu"`` (one learnable slope, init 0.25, as in the reference)."""
    if kind == "relu":
        return nn.ReLU()
    if kind == "prelu":
        return nn.PReLU()
    raise ValueError(f"activation must be 'relu' or 'prelu', got {kind!r}")


def lse_pool(heatmap: Tensor, r: float) -> Tensor:
    """Log-sum-exp pooling ``(1/r) log(mean exp(r h))`` over H, W: ``(B, K, H, W) -> (B, K)``.

    Tends to the max as ``r -> inf`` and to the mean as ``r -> 0``.
    """
    flat = heatmap.flatten(2)
    return (torch.logsumexp(r * flat, dim=2) - math.log(flat.shape[2])) / r


def topk_pool(heatmap: Tensor, fraction: float) -> Tensor:
    """Mean of the ``ceil(fraction * H * W)`` highest values of each map:
    ``(B, K, H, W) -> (B, K)``; the max at ``fraction -> 0``, the mean at 1."""
    flat = heatmap.flatten(2)
    k = max(1, math.ceil(fraction * flat.shape[2]))
    return flat.topk(k, dim=2).values.mean(2)


def _activate(x: Tensor, out_act: str | None) -> Tensor:
    if out_act is None:
        return x
    if out_act == "softmax":
        return torch.softmax(x, dim=1)
    return {"sigmoid": torch.sigmoid, "relu": F.relu, "tanh": torch.tanh}[out_act](x)


class GPClassifier(nn.Module):
    """Base class: subclasses build their layers, implement :meth:`features` and :attr:`head`.

    ``model(x)`` returns logits ``(B, K)`` in train and eval mode alike;
    ``model.forward_with_heatmap(x)`` returns ``(logits (B, K), heatmap (B, K, H, W))`` from
    one forward pass, with the heatmap at input resolution.
    """

    #: human-readable name used in error messages, e.g. "GP-UNet"
    display_name = "GP model"

    def __init__(self, in_channels: int, pool: str, heatmap_pool: str, lse_r: float,
                 out_act: str | None, background_class: int | None = None,
                 topk_fraction: float = 0.05, pool_region: str = "image"):
        super().__init__()
        if pool_region not in POOL_REGIONS:
            raise ValueError(f"pool_region must be one of {POOL_REGIONS}, got {pool_region!r}")
        if not 0 < topk_fraction <= 1:
            raise ValueError(f"topk_fraction must be in (0, 1], got {topk_fraction}")
        if background_class is not None and (isinstance(background_class, bool)
                                             or not isinstance(background_class, int)
                                             or background_class < 0):
            raise ValueError(f"background_class must be a class index or None, got "
                             f"{background_class!r}")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if heatmap_pool not in HEATMAP_POOLS:
            raise ValueError(f"heatmap_pool must be one of {HEATMAP_POOLS}, got {heatmap_pool!r}")
        if out_act == "None":  # the reference spells "no activation" as a string
            out_act = None
        if out_act not in OUT_ACTS:
            raise ValueError(f"out_act must be one of {OUT_ACTS}, got {out_act!r}")
        if not lse_r > 0:
            raise ValueError(f"lse_r must be positive, got {lse_r}")
        self.in_channels = in_channels
        self.pool = pool
        self.heatmap_pool = heatmap_pool
        self.lse_r = float(lse_r)
        self.topk_fraction = float(topk_fraction)
        self.pool_region = pool_region
        self.out_act = out_act
        self.background_class = background_class
        self.config: dict = {}

    # -- to be provided by subclasses ------------------------------------------------------
    @property
    def head(self) -> nn.Conv2d:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def n_classes(self) -> int:
        """Classes scored (the head's output channels), as the baselines' ``n_classes``."""
        return int(self.head.out_channels)

    def features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """``(B, C_in, H, W) -> (B, C_f, H, W)`` final decoder features."""
        raise NotImplementedError

    def check_spatial_size(self, h: int, w: int) -> None:
        """Raise ``ValueError`` if the architecture cannot produce an ``h x w`` heatmap."""

    # -- shared logic ----------------------------------------------------------------------
    def check_input(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(
                f"{self.display_name} expects a (B, C, H, W) batch of slices, got shape "
                f"{tuple(x.shape)}; add a batch axis with x[None] for a single slice")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.display_name} was built for {self.in_channels} input contrasts, got "
                f"{x.shape[1]} channels; build it with in_channels={x.shape[1]} or select the "
                f"contrasts it was trained on")
        self.check_spatial_size(int(x.shape[2]), int(x.shape[3]))

    def _outputs(self, x: Tensor, with_heatmap: bool) -> tuple[Tensor, Tensor | None]:
        self.check_input(x)
        feats = self.features(x)
        head = self.head
        outside = self._outside_region(x)
        if self.pool == "features":
            pooled = feats if outside is None else feats.masked_fill(outside, _LOW)
            logits = head(F.adaptive_max_pool2d(pooled, 1)).flatten(1)
            heatmap = head(feats) if with_heatmap else None
        else:
            heatmap = head(feats)
            pooled = heatmap if outside is None else heatmap.masked_fill(outside, _LOW)
            if self.heatmap_pool == "max":
                logits = pooled.amax(dim=(2, 3))
            elif self.heatmap_pool == "lse":
                logits = lse_pool(pooled, self.lse_r)
            else:
                logits = topk_pool(pooled, self.topk_fraction)
        if heatmap is not None and outside is not None:
            # outside the pooling region the map takes no part in the decision: show it as
            # the least evidence inside the region, not as values the logit never read
            low = heatmap.masked_fill(outside, float("inf")).amin(dim=(2, 3), keepdim=True)
            heatmap = torch.where(outside, low, heatmap)
        if self.background_class is not None:
            logits, heatmap = self._constant_background(logits, heatmap)
        logits = _activate(logits, self.out_act)
        if heatmap is not None:
            heatmap = _activate(heatmap, self.out_act)
        return logits, heatmap

    def _outside_region(self, x: Tensor) -> Tensor | None:
        """``(B, 1, H, W)`` bool, True outside the pooling region; None: pool everywhere."""
        if self.pool_region == "image":
            return None
        outside = (x == 0).all(dim=1, keepdim=True)
        empty = outside.flatten(1).all(1)[:, None, None, None]  # no brain: pool everywhere
        return outside & ~empty

    def _constant_background(self, logits: Tensor, heatmap: Tensor | None):
        """Logit and map of :attr:`background_class` replaced by the head's bias ``b_c``."""
        c = self.background_class
        if c >= logits.shape[1]:
            raise ValueError(f"background_class {c} is not a class of this "
                             f"{logits.shape[1]}-class model")
        bias = self.head.bias
        b = bias[c].to(logits.dtype) if bias is not None else logits.new_zeros(())
        other = torch.ones(logits.shape[1], dtype=logits.dtype, device=logits.device)
        other[c] = 0
        logits = logits * other + b * (1 - other)
        if heatmap is not None:
            o = other.to(heatmap.dtype)[None, :, None, None]
            heatmap = heatmap * o + b.to(heatmap.dtype) * (1 - o)
        return logits, heatmap

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W) float32 -> (B, K)`` logits (train and eval mode alike)."""
        return self._outputs(x, with_heatmap=False)[0]

    def forward_with_heatmap(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C_in, H, W) -> (logits (B, K), heatmap (B, K, H, W))`` in one forward pass."""
        logits, heatmap = self._outputs(x, with_heatmap=True)
        return logits, heatmap

    def extra_repr(self) -> str:
        pool = self.pool if self.pool == "features" else f"heatmap/{self.heatmap_pool}"
        bg = "" if self.background_class is None else f", background_class={self.background_class}"
        return f"pool={pool}, out_act={self.out_act}{bg}"


def record_config(local_vars: dict) -> dict:
    """The constructor arguments of a model, from its ``locals()``, for saving beside weights."""
    return {k: v for k, v in local_vars.items() if k not in ("self", "__class__")}
