"""MProtoNet-2D, variant C (``p_mode=5``: soft masking + online-CAM), after Wei et al., MIDL 2023
(aywi/mprotonet ``src/models.py``), ported to 2D slices and C classes as
``docs/spec/mprotonet.md`` §2 and §8 describe.

Data flow for a batch ``x (B, C_in, H, W)``; ``K = prototypes_per_class * n_classes``::

    z = features(x)                       (B, 512, h, w)   resnet152[:6], stride 8
    G = add_ons(z)                        (B, D, h, w)     1x1 conv-BN-ReLU-1x1 conv-BN-Sigmoid
    M = soft_mask(p_map[:5](z))           (B, K, h, w)     mapping module + soft masking
    H = einsum(M, G) / (h w)              (B, K, D)        masked average pooling
    d = ReLU(1 - cos(H_k, p_k))           (B, K)           cosine distance to prototype k
    s = ReLU(1 - d)                       (B, K)           similarity
    logits = W_cls s                      (B, n_classes)   Linear(K -> C, no bias)

Soft masking: ``m = ReLU(.)``, min-max scaled per sample jointly over (K, h, w) with the
divisor clamped at 1e-4, then ``M = sigmoid(omega (m - sigma))`` (omega 10, sigma 0.5).
Prototype ``j`` belongs to class ``j // prototypes_per_class``; ``W_cls`` starts at +1 for
own-class and -0.5 for other-class connections.

The training objective (focal, cluster, separation, mapping, online-CAM; push; last-layer
passes) lives in :mod:`gpcore.training.objectives`; ``objective = "mprotonet"`` tells the
engine to use it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import record_config
from .registry import register_model
from .resnet import init_conv, resnet_features


def soft_mask(m: Tensor, omega: float = 10.0, sigma: float = 0.5, eps: float = 1e-4) -> Tensor:
    """MProtoNet's soft masking of raw maps ``(B, K, h, w)``: ReLU, per-sample min-max over
    all of (K, h, w) (divisor clamped at ``eps``), then ``sigmoid(omega (m - sigma))``."""
    m = F.relu(m)
    dims = tuple(range(1, m.ndim))
    m = m - m.amin(dims, keepdim=True)
    m = m / m.amax(dims, keepdim=True).clamp_min(eps)
    return torch.sigmoid(omega * (m - sigma))


def cosine_distance(h: Tensor, prototypes: Tensor) -> Tensor:
    """``ReLU(1 - cos(h_bk, p_k))`` for ``h (B, K, D)`` and ``prototypes (K, D)`` -> ``(B, K)``
    (vectors normalised with ``F.normalize``, eps 1e-12, as the reference)."""
    cos = (F.normalize(h, p=2, dim=2) * F.normalize(prototypes, p=2, dim=1)[None]).sum(2)
    return F.relu(1 - cos)


@register_model("mprotonet")
class MProtoNet2D(nn.Module):
    """MProtoNet-2D, variant C. Paper configuration: resnet152[:6] at full width (512 backbone
    channels, stride 8), 128-d add-on and prototypes, 15 prototypes per class.

    ``model(x)`` returns logits ``(B, C)`` in train and eval mode;
    :meth:`forward_train` the dict the losses need; :meth:`forward_with_heatmap` logits and the
    ``docs/spec/mprotonet.md`` §6 localisation maps for every class; :meth:`push_forward` ``(H, d, M)``.

    Args:
        in_channels: input contrasts.
        n_classes: C (Healthy, LGG, HGG).
        depth: ResNet depth of the backbone (18, 34, 50, 101, 152).
        width: base width of the backbone (64 = torchvision).
        n_layers: backbone modules kept (6 = through layer2, stride 8).
        prototypes_per_class: 15 in the reference (K = 30 for 2 classes).
        prototype_dim: D, channels of the add-on output, of the mapping module's hidden layer
            and of the prototypes (128).
        omega, sigma: soft-masking steepness and centre (10, 0.5).
        incorrect_strength: initial W_cls weight of other-class connections (-0.5).
    """

    display_name = "MProtoNet-2D"
    #: which training objective gpcore.training.objectives applies
    objective = "mprotonet"

    def __init__(self, in_channels: int = 4, n_classes: int = 3, depth: int = 152,
                 width: int = 64, n_layers: int = 6, prototypes_per_class: int = 15,
                 prototype_dim: int = 128, omega: float = 10.0, sigma: float = 0.5,
                 incorrect_strength: float = -0.5):
        super().__init__()
        self.config = record_config(locals())
        if prototypes_per_class < 1 or n_classes < 2:
            raise ValueError(f"need n_classes >= 2 and prototypes_per_class >= 1, got "
                             f"{n_classes} and {prototypes_per_class}")
        self.in_channels, self.n_classes = in_channels, n_classes
        self.prototypes_per_class = prototypes_per_class
        self.n_prototypes = k = prototypes_per_class * n_classes
        self.omega, self.sigma, self.eps = float(omega), float(sigma), 1e-4
        d = prototype_dim
        self.features = resnet_features(depth, in_channels, width, n_layers)
        c = self.features.out_channels
        self.add_ons = nn.Sequential(
            nn.Conv2d(c, d, 1, bias=False), nn.BatchNorm2d(d), nn.ReLU(),
            nn.Conv2d(d, d, 1, bias=False), nn.BatchNorm2d(d), nn.Sigmoid())
        # [3] is Conv_map (shared with the online-CAM branch); the final Sigmoid is kept for
        # the reference's module indices but unused by soft masking (p_mode 5)
        self.p_map = nn.Sequential(
            nn.Conv2d(c, d, 1, bias=False), nn.BatchNorm2d(d), nn.ReLU(),
            nn.Conv2d(d, k, 1, bias=False), nn.BatchNorm2d(k), nn.Sigmoid())
        self.prototype_vectors = nn.Parameter(torch.rand(k, d, 1, 1))
        self.last_layer = nn.Linear(k, n_classes, bias=False)
        identity = torch.zeros(k, n_classes)
        identity[torch.arange(k), torch.arange(k) // prototypes_per_class] = 1
        # derived from the config: not saved with the weights
        self.register_buffer("prototype_class_identity", identity, persistent=False)
        init_conv(self.add_ons)
        init_conv(self.p_map)
        self.set_last_layer_incorrect_connection(incorrect_strength)

    # -- pieces ------------------------------------------------------------------------------
    @torch.no_grad()
    def set_last_layer_incorrect_connection(self, incorrect_strength: float = -0.5) -> None:
        """W_cls := +1 on own-class connections, ``incorrect_strength`` on the others."""
        own = self.prototype_class_identity.T.to(self.last_layer.weight)
        self.last_layer.weight.copy_(own + incorrect_strength * (1 - own))

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self.display_name} expects (B, {self.in_channels}, H, W) slices, "
                             f"got shape {tuple(x.shape)}")
        self.check_spatial_size(int(x.shape[2]), int(x.shape[3]))

    def check_spatial_size(self, h: int, w: int) -> None:
        need = self.features.stride
        if h < need or w < need:
            raise ValueError(f"{self.display_name} down-samples by {need}: needs H and W >= "
                             f"{need}, got {h}×{w}")

    def mapping(self, z: Tensor) -> Tensor:
        """Soft-masked maps ``M (B, K, h, w)`` from backbone features ``z``."""
        return soft_mask(self.p_map[:-1](z), self.omega, self.sigma, self.eps)

    def conv_features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(z, G, M)``: backbone features, add-on features, soft-masked maps."""
        self.check_input(x)
        z = self.features(x)
        return z, self.add_ons(z), self.mapping(z)

    @staticmethod
    def masked_pool(maps: Tensor, g: Tensor) -> Tensor:
        """``H = einsum('bkhw,bchw->bkc', M, G) / (h w)`` -> ``(B, K, D)``."""
        return torch.einsum("bkhw,bchw->bkc", maps, g) / (g.shape[2] * g.shape[3])

    def prototype_distances(self, h: Tensor) -> Tensor:
        return cosine_distance(h, self.prototype_vectors.flatten(1))

    @staticmethod
    def distance_2_similarity(d: Tensor) -> Tensor:
        return F.relu(1 - d)

    def class_maps(self, maps: Tensor) -> Tensor:
        """Spec §6 localisation maps ``(B, C, h, w)`` at feature resolution: for target class
        c, the mean over all K of M with the other classes' prototypes zeroed."""
        ident = self.prototype_class_identity.to(maps.dtype)
        return torch.einsum("bkhw,kc->bchw", maps, ident) / maps.shape[1]

    # -- outputs -----------------------------------------------------------------------------
    def forward_train(self, x: Tensor) -> dict[str, Tensor]:
        """``{"logits" (B, C), "distances" (B, K), "z" (B, 512, h, w), "maps" (B, K, h, w),
        "pooled" (B, K, D)}`` - what the reference's train-mode forward returns, plus H."""
        z, g, maps = self.conv_features(x)
        pooled = self.masked_pool(maps, g)
        distances = self.prototype_distances(pooled)
        logits = self.last_layer(self.distance_2_similarity(distances))
        return {"logits": logits, "distances": distances, "z": z, "maps": maps,
                "pooled": pooled}

    def forward(self, x: Tensor, return_all: bool = False):
        """``(B, C_in, H, W) -> (B, C)`` logits in train and eval mode; ``return_all=True``
        gives :meth:`forward_train`'s dict (so that a DDP wrapper sees the training call)."""
        out = self.forward_train(x)
        return out if return_all else out["logits"]

    def push_forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(H (B, K, D), d (B, K), M (B, K, h, w))``, as the reference's ``push_forward``."""
        out = self.forward_train(x)
        return out["pooled"], out["distances"], out["maps"]

    def forward_with_heatmap(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits (B, C), heatmap (B, C, H, W))``; heatmap channel c is the localisation map
        for target class c, bilinearly up-sampled (align_corners=False) to the input size."""
        out = self.forward_train(x)
        heat = F.interpolate(self.class_maps(out["maps"]), size=x.shape[2:], mode="bilinear",
                             align_corners=False)
        return out["logits"], heat

    def extra_repr(self) -> str:
        return (f"K={self.n_prototypes} ({self.prototypes_per_class} per class), "
                f"soft masking omega={self.omega} sigma={self.sigma}")
