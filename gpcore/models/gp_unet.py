"""GP-UNet (reference ``model/Unet/GP_UNet.py``): a 2D U-Net with average-pool down-sampling,
Fourier ("sinc"), transposed-conv or bilinear up-sampling and the GP head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import GPClassifier, check_probability, make_activation, record_config
from .registry import register_model
from .resample import fourier_resample

UP_MODES = ("sinc", "upconv", "bilinear")


class UNetConvBlock(nn.Module):
    """Two 3x3 convs with activation (and optional BatchNorm *after* it), held in ``.block``."""

    def __init__(self, cin: int, cout: int, activation: str, batch_norm: bool):
        super().__init__()
        layers: list[nn.Module] = []
        for c_in in (cin, cout):
            layers += [nn.Conv2d(c_in, cout, 3, padding=1), make_activation(activation)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class UNetUpBlock(nn.Module):
    """Up-sample ``x`` x2, match the skip's size, concatenate ``[up, skip]``, conv block."""

    def __init__(self, cin: int, cout: int, up_mode: str, activation: str, batch_norm: bool):
        super().__init__()
        self.up_mode = up_mode
        if up_mode == "upconv":
            self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        elif up_mode == "sinc":
            self.up = nn.Conv2d(cin, cout, 1)  # applied after the Fourier resampling
        else:
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"),
                                    nn.Conv2d(cin, cout, 1))
        self.conv_block = UNetConvBlock(cin, cout, activation, batch_norm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        if self.up_mode == "sinc":
            up = self.up(fourier_resample(x, (2 * x.shape[2], 2 * x.shape[3])))
        else:
            up = self.up(x)
        if up.shape[2:] != skip.shape[2:]:  # odd encoder sizes were floored by the pooling
            up = F.interpolate(up, size=skip.shape[2:], mode="bilinear", align_corners=False)
        return self.conv_block(torch.cat([up, skip], dim=1))


@register_model("gp_unet")
class GPUNet(GPClassifier):
    """GP-UNet. Paper configuration: 4 contrasts, 3 classes, depth 3, 64/128/256 channels,
    sinc up-sampling, bottleneck ``Dropout2d(0.5)``; 1,740,675 parameters.

    Args:
        in_channels: input contrasts (paper: T1, T2, T1CE, FLAIR).
        n_classes: K (paper: Healthy, LGG, HGG).
        depth: number of resolution levels; channels are ``2**(wf + i)``.
        wf: log2 of the first level's width.
        up_mode: ``"sinc"`` (Fourier resampling + 1x1 conv), ``"upconv"`` or ``"bilinear"``.
        dropout: ``Dropout2d`` probability on the bottleneck (paper 0.5).
        batch_norm: BatchNorm after each activation (not used by the paper).
        activation: ``"relu"`` (paper) or ``"prelu"``.
        pool, heatmap_pool, lse_r, topk_fraction, pool_region, out_act, background_class: see
            :class:`~gpcore.models.base.GPClassifier`.
    """

    display_name = "GP-UNet"

    def __init__(self, in_channels: int = 4, n_classes: int = 3, depth: int = 3, wf: int = 6,
                 up_mode: str = "sinc", dropout: float = 0.5, batch_norm: bool = False,
                 activation: str = "relu", pool: str = "features", heatmap_pool: str = "max",
                 lse_r: float = 5.0, out_act: str | None = None, background_class: int | None = None,
                 topk_fraction: float = 0.05, pool_region: str = "image"):
        super().__init__(in_channels, pool, heatmap_pool, lse_r, out_act, background_class,
                         topk_fraction, pool_region)
        self.config = record_config(locals())
        if up_mode not in UP_MODES:
            raise ValueError(f"up_mode must be one of {UP_MODES}, got {up_mode!r}")
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        check_probability(dropout, "dropout")
        self.depth = depth
        widths = [2 ** (wf + i) for i in range(depth)]
        self.down_path = nn.ModuleList()
        prev = in_channels
        for width in widths:
            self.down_path.append(UNetConvBlock(prev, width, activation, batch_norm))
            prev = width
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.up_path = nn.ModuleList(
            UNetUpBlock(widths[i + 1], widths[i], up_mode, activation, batch_norm)
            for i in reversed(range(depth - 1)))
        self.last = nn.Conv2d(widths[0], n_classes, 1)

    @property
    def head(self) -> nn.Conv2d:
        return self.last

    def check_spatial_size(self, h: int, w: int) -> None:
        need = 2 ** (self.depth - 1)
        if h < need or w < need:
            raise ValueError(f"{self.display_name} with depth {self.depth} needs H and W >= "
                             f"{need}, got {h}×{w}")

    def features(self, x: Tensor) -> Tensor:
        skips = []
        for i, down in enumerate(self.down_path):
            x = down(x)
            if i < self.depth - 1:
                skips.append(x)
                x = F.avg_pool2d(x, 2)
        x = self.dropout(x)
        for up, skip in zip(self.up_path, reversed(skips)):
            x = up(x, skip)
        return x
