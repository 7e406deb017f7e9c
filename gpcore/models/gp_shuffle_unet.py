"""GP-ShuffleUNet (reference ``model/ShuffleUnet/GP_ShuffleUNet.py``): a U-Net whose
down-sampling is pixel-unshuffle and up-sampling pixel-shuffle, with four parallel
"decomposition" branches per level (only the 4th goes down), and the GP head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import GPClassifier, check_probability, record_config
from .registry import register_model

INITS = ("icnr", "reference")


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class DoubleConv(nn.Module):
    # ReLUs are modules (one per use, no parameters, no state_dict keys) so that tools which
    # hook nn.ReLU - Captum's GuidedBackprop - see every rectifier of the model
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv_1 = _conv3(cin, cout)
        self.conv_2 = _conv3(cout, cout)
        self.relu_1, self.relu_2 = nn.ReLU(), nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu_2(self.conv_2(self.relu_1(self.conv_1(x))))


class Decomp(nn.Module):
    """Four parallel 3x3 conv + ReLU branches on the same input: ``x -> (b1, b2, b3, b4)``."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.conv2, self.conv3, self.conv4 = (_conv3(c, c) for _ in range(4))
        self.relus = nn.ModuleList(nn.ReLU() for _ in range(4))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        convs = (self.conv1, self.conv2, self.conv3, self.conv4)
        return tuple(relu(conv(x)) for conv, relu in zip(convs, self.relus))


class DownConv(nn.Module):
    """Holds ``.conv``: conv 4c->c, BN, ReLU, conv c->c, BN, ReLU (the only norms in the model)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Sequential(_conv3(4 * c, c), nn.BatchNorm2d(c), nn.ReLU(),
                                  _conv3(c, c), nn.BatchNorm2d(c), nn.ReLU())


class PixelUnshuffleBlock(nn.Module):
    """``c @ H -> c @ H/2``: conv, ``pixel_unshuffle(2)`` (4c channels), then :class:`DownConv`."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = _conv3(c, c)
        self.down_conv = DownConv(c)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_conv.conv(F.pixel_unshuffle(self.conv(x), 2))


class PixelShuffleBlock(nn.Module):
    """``c @ H -> c/2 @ 2H``: conv c -> 2c, then ``pixel_shuffle(2)``."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = _conv3(c, 2 * c)

    def forward(self, x: Tensor) -> Tensor:
        return F.pixel_shuffle(self.conv(x), 2)


def icnr_(conv: nn.Conv2d, scale: int = 2) -> None:
    """ICNR init (Aitken et al. 2017) of the conv before a pixel shuffle.

    Output channels ``s²g … s²g + s² - 1`` share one Kaiming-normal sub-kernel, so with zero
    bias the shuffled output starts as nearest-neighbour up-sampling (no checkerboard).
    """
    out_c = conv.out_channels // scale ** 2
    sub = torch.empty(out_c, *conv.weight.shape[1:], dtype=conv.weight.dtype)
    nn.init.kaiming_normal_(sub, nonlinearity="relu")
    with torch.no_grad():
        conv.weight.copy_(sub.repeat_interleave(scale ** 2, dim=0))
        if conv.bias is not None:
            conv.bias.zero_()


@register_model("gp_shuffle_unet")
class GPShuffleUNet(GPClassifier):
    """GP-ShuffleUNet. Paper configuration: 4 contrasts, 3 classes, widths 64/128/256/512,
    3 levels, bottleneck ``Dropout2d(0.5)``; 26,371,587 parameters. H and W must be divisible
    by ``2**n_levels``.

    Args:
        in_channels, n_classes: input contrasts and classes (reference ``in_ch``, ``out_ch``).
        num_features: width of the first level; level i has ``num_features * 2**i``.
        n_levels: number of pixel-unshuffle down-samplings.
        dropout: bottleneck ``Dropout2d`` probability (paper 0.5).
        init: ``"icnr"`` - Kaiming-normal for every conv, then ICNR for the convs before each
            pixel shuffle (what the reference intended); ``"reference"`` - Kaiming-normal for
            every conv, as the published code effectively did (its ICNR was overwritten, D2).
        pool, heatmap_pool, lse_r, topk_fraction, pool_region, out_act, background_class: see
            :class:`~gpcore.models.base.GPClassifier`.
    """

    display_name = "GP-ShuffleUNet"

    def __init__(self, in_channels: int = 4, n_classes: int = 3, num_features: int = 64,
                 n_levels: int = 3, dropout: float = 0.5, init: str = "icnr",
                 pool: str = "features", heatmap_pool: str = "max", lse_r: float = 5.0,
                 out_act: str | None = None, background_class: int | None = None,
                 topk_fraction: float = 0.05, pool_region: str = "image"):
        super().__init__(in_channels, pool, heatmap_pool, lse_r, out_act, background_class,
                         topk_fraction, pool_region)
        self.config = record_config(locals())
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        check_probability(dropout, "dropout")
        self.n_levels = n_levels
        f = [num_features * 2 ** i for i in range(n_levels + 1)]
        self.conv_inp = DoubleConv(in_channels, f[0])
        self.wave_down = nn.ModuleList(Decomp(f[i]) for i in range(n_levels))
        self.pix_unshuff = nn.ModuleList(PixelUnshuffleBlock(f[i]) for i in range(n_levels))
        self.conv_enc = nn.ModuleList(DoubleConv(f[i], f[i + 1]) for i in range(n_levels))
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        # decoder modules are indexed from the deepest level: j = 0 <-> level n_levels - 1
        levels = list(reversed(range(n_levels)))
        self.pix_shuff = nn.ModuleList(PixelShuffleBlock(f[l + 1]) for l in levels)
        self.wave_up = nn.ModuleList(Decomp(f[l]) for l in levels)
        self.convup = nn.ModuleList(DoubleConv(5 * f[l], f[l]) for l in levels)
        self.out = nn.Conv2d(f[0], n_classes, 1)
        self._init_weights(init)

    def _init_weights(self, init: str) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        if init == "icnr":  # after the generic init, so that it is not overwritten (D2)
            for block in self.pix_shuff:
                icnr_(block.conv)

    @property
    def head(self) -> nn.Conv2d:
        return self.out

    def check_spatial_size(self, h: int, w: int) -> None:
        k = 2 ** self.n_levels
        if h % k or w % k:
            raise ValueError(f"{self.display_name} needs H and W divisible by {k}, got {h}×{w}; "
                             f"pad or crop the slice (e.g. to {-(-h // k) * k}×{-(-w // k) * k})")

    def features(self, x: Tensor) -> Tensor:
        enc = [self.conv_inp(x)]
        decomp = []
        for i in range(self.n_levels):
            branches = self.wave_down[i](enc[i])
            decomp.append(branches)
            enc.append(self.conv_enc[i](self.pix_unshuff[i](branches[3])))
        d = self.dropout(enc[-1])
        for j in range(self.n_levels):
            level = self.n_levels - 1 - j
            up = self.wave_up[j](self.pix_shuff[j](d))
            skip = torch.cat([u + w for u, w in zip(up, decomp[level])], dim=1)
            d = self.convup[j](torch.cat([enc[level], skip], dim=1))
        return d
