"""GP-ReconResNet (reference ``model/ReconResNet/GP_ReconResNet.py``): a residual
encoder-decoder (ReconResNet) with strided-conv down-sampling, 14 residual blocks at the
bottleneck, Fourier ("sinc") or transposed-conv up-sampling and the GP head."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import GPClassifier, check_probability, make_activation, record_config
from .registry import register_model
from .resample import fourier_resample

# "sinc" is Fourier resampling, "upconv" a transposed conv; the others are F.interpolate modes.
UP_MODES = ("sinc", "upconv", "bilinear", "nearest", "bicubic")


def _norm(kind: str, c: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(c)  # affine=False, no running stats: no state_dict entries
    if kind == "batch":
        return nn.BatchNorm2d(c)
    raise ValueError(f"norm must be 'instance' or 'batch', got {kind!r}")


class ResidualBlock(nn.Module):
    """``x + conv_block(x)``, no activation after the sum; dropout between the two convs."""

    def __init__(self, c: int, norm: str, activation: str, drop: float):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), _norm(norm, c),
            make_activation(activation), nn.Dropout2d(drop),
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), _norm(norm, c))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


class DownsamplingBlock(nn.Module):
    """Stride-2 3x3 conv (zero padding 1) doubling the channels: ``c @ H -> 2c @ ceil(H/2)``."""

    def __init__(self, c: int, norm: str, activation: str):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1),
                                        _norm(norm, 2 * c), make_activation(activation))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_block(x)


class UpsamplingBlock(nn.Module):
    """Halve the channels and restore the encoder's saved size ``c @ h -> c/2 @ size``."""

    def __init__(self, c: int, norm: str, activation: str, mode: str):
        super().__init__()
        self.mode = mode
        if mode == "upconv":
            layers = [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1)]
        else:
            layers = [nn.ReflectionPad2d(1), nn.Conv2d(c, c // 2, 3)]
        self.conv_block = nn.Sequential(*layers, _norm(norm, c // 2),
                                        make_activation(activation))

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        if self.mode == "sinc":
            x = fourier_resample(x, size)
        elif self.mode != "upconv":
            x = F.interpolate(x, size=size, mode=self.mode)
        return self.conv_block(x)


@register_model("gp_recon_resnet")
class GPReconResNet(GPClassifier):
    """GP-ReconResNet. Paper configuration: 4 contrasts, 3 classes, 64 -> 128 -> 256 channels,
    14 residual blocks, residual ``Dropout2d(0.5)``, PReLU, InstanceNorm, sinc up-sampling;
    17,272,918 parameters.

    Args:
        in_channels, n_classes: input contrasts and classes.
        res_blocks: residual blocks at the bottleneck.
        starting_nfeatures: width of the first conv (doubles per down-sampling).
        updown_blocks: number of down- (and up-) sampling blocks.
        res_drop_prob: ``Dropout2d`` probability inside each residual block, a float in [0, 1)
            (paper 0.5 on BraTS, 0.2 on Figshare; the reference's ``True`` meant p=1, defect D1).
        up_mode: ``"sinc"`` (paper), ``"upconv"`` (needs H, W divisible by 2**updown_blocks),
            or an ``F.interpolate`` mode.
        norm: ``"instance"`` (paper) or ``"batch"``.
        activation: ``"prelu"`` (paper; one slope per layer) or ``"relu"``.
        pool, heatmap_pool, lse_r, topk_fraction, pool_region, out_act, background_class: see
            :class:`~gpcore.models.base.GPClassifier`.
    """

    display_name = "GP-ReconResNet"

    def __init__(self, in_channels: int = 4, n_classes: int = 3, res_blocks: int = 14,
                 starting_nfeatures: int = 64, updown_blocks: int = 2,
                 res_drop_prob: float = 0.5, up_mode: str = "sinc", norm: str = "instance",
                 activation: str = "prelu", pool: str = "features", heatmap_pool: str = "max",
                 lse_r: float = 5.0, out_act: str | None = None, background_class: int | None = None,
                 topk_fraction: float = 0.05, pool_region: str = "image"):
        super().__init__(in_channels, pool, heatmap_pool, lse_r, out_act, background_class,
                         topk_fraction, pool_region)
        self.config = record_config(locals())
        if up_mode not in UP_MODES:
            raise ValueError(f"up_mode must be one of {UP_MODES}, got {up_mode!r}")
        check_probability(res_drop_prob, "res_drop_prob")
        self.up_mode = up_mode
        self.updown_blocks = updown_blocks
        c = starting_nfeatures
        self.intialConv = nn.Sequential(  # (sic): the reference's key name
            nn.ReflectionPad2d(3), nn.Conv2d(in_channels, c, 7), _norm(norm, c),
            make_activation(activation))
        self.downsam = nn.ModuleList()
        for _ in range(updown_blocks):
            self.downsam.append(DownsamplingBlock(c, norm, activation))
            c *= 2
        self.resblocks = nn.Sequential(
            *(ResidualBlock(c, norm, activation, res_drop_prob) for _ in range(res_blocks)))
        self.upsam = nn.ModuleList()
        for _ in range(updown_blocks):
            self.upsam.append(UpsamplingBlock(c, norm, activation, up_mode))
            c //= 2
        self.finalconv = nn.Sequential(nn.Conv2d(c, n_classes, 1))

    @property
    def head(self) -> nn.Conv2d:
        return self.finalconv[0]

    def check_spatial_size(self, h: int, w: int) -> None:
        if self.up_mode == "upconv":
            k = 2 ** self.updown_blocks
            if h % k or w % k:
                raise ValueError(
                    f"{self.display_name} with up_mode='upconv' needs H and W divisible by {k}, "
                    f"got {h}×{w}; pad or crop the slice, or use up_mode='sinc'")
        for side in (h, w):
            for _ in range(self.updown_blocks):
                side = -(-side // 2)
            if side < 2 or min(h, w) < 4:
                raise ValueError(f"{self.display_name} needs H and W large enough for its "
                                 f"reflection padding (>= 5 for 2 down-samplings), got {h}×{w}")

    def features(self, x: Tensor) -> Tensor:
        x = self.intialConv(x)
        sizes = []
        for down in self.downsam:
            sizes.append((x.shape[2], x.shape[3]))
            x = down(x)
        x = self.resblocks(x)
        for up, size in zip(self.upsam, reversed(sizes)):
            x = up(x, size)
        return x
