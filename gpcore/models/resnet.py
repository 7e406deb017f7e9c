"""ResNet feature extractors with torchvision's module layout, for the MProtoNet baselines.

torchvision itself is not used (its wheels do not match the pinned torch). The layout, the
block definitions (ResNet v1.5: the stride sits on the 3x3 conv of a bottleneck) and the key
names are torchvision's, so ``features.layer2.3.conv2.weight`` means the same thing here::

    conv1 (7x7, stride 2) -> bn1 -> relu -> maxpool (3x3, stride 2) -> layer1 .. layer4

``resnet_features(depth, n_layers=6)`` keeps the first six modules, i.e. everything through
``layer2``: total stride 8, ``8 * width`` channels for bottleneck nets (512 at full width),
``2 * width`` for basic-block nets (ResNet-18/34). This is MProtoNet's ``features[:6]``.

Initialisation (MProtoNet ``init_conv``): Kaiming normal, ``mode="fan_out"``,
``nonlinearity="relu"`` on every conv, zero bias where there is one; BatchNorm weight 1,
bias 0. Random initialisation only: nothing is downloaded.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

#: depth -> (block, blocks per stage), as torchvision
DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
          50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3)),
          152: ("bottleneck", (3, 8, 36, 3))}
MODULE_NAMES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and an identity (or 1x1-projected) shortcut."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand (x4), with BatchNorm."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _stage(block: type[nn.Module], cin: int, planes: int, blocks: int,
           stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or cin != planes * block.expansion:
        downsample = nn.Sequential(conv1x1(cin, planes * block.expansion, stride),
                                   nn.BatchNorm2d(planes * block.expansion))
    layers = [block(cin, planes, stride, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def init_conv(module: nn.Module) -> None:
    """Kaiming normal (fan_out, relu) on every conv and zero bias (MProtoNet ``init_conv``)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ResNetFeatures(nn.Sequential):
    """``nn.Sequential(conv1, bn1, relu, maxpool, layer1, ..., layer4)[:n_layers]``.

    Args:
        depth: 18, 34, 50, 101 or 152.
        in_channels: input contrasts (conv1 becomes ``Conv2d(in_channels, width, 7, 2, 3)``).
        width: channels of conv1 and of layer1's 3x3 convs (torchvision: 64); the stages
            have ``width, 2 width, 4 width, 8 width`` planes.
        n_layers: keep the first ``n_layers`` modules (1..8); 6 = through layer2, stride 8.

    Attributes: ``out_channels`` (channels of the output), ``stride`` (total down-sampling).
    """

    def __init__(self, depth: int = 152, in_channels: int = 4, width: int = 64,
                 n_layers: int = 8):
        if depth not in DEPTHS:
            raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth}")
        if not 1 <= n_layers <= len(MODULE_NAMES):
            raise ValueError(f"n_layers must be in 1..{len(MODULE_NAMES)}, got {n_layers}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        kind, blocks = DEPTHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        modules: list[tuple[str, nn.Module]] = [
            ("conv1", nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)),
            ("bn1", nn.BatchNorm2d(width)), ("relu", nn.ReLU(inplace=True)),
            ("maxpool", nn.MaxPool2d(3, stride=2, padding=1))]
        cin, channels, stride = width, [width] * 4, [2, 2, 2, 4]
        for i, n in enumerate(blocks):
            planes, s = width * 2 ** i, 1 if i == 0 else 2
            modules.append((f"layer{i + 1}", _stage(block, cin, planes, n, s)))
            cin = planes * block.expansion
            channels.append(cin)
            stride.append(stride[-1] * s)
        super().__init__(OrderedDict(modules[:n_layers]))
        self.out_channels = channels[n_layers - 1]
        self.stride = stride[n_layers - 1]
        self.depth, self.width, self.n_layers = depth, width, n_layers
        init_conv(self)

    def extra_repr(self) -> str:
        return (f"resnet{self.depth}[:{self.n_layers}], width={self.width}, "
                f"out_channels={self.out_channels}, stride={self.stride}")


def resnet_features(depth: int = 152, in_channels: int = 4, width: int = 64,
                    n_layers: int = 8) -> ResNetFeatures:
    """See :class:`ResNetFeatures`."""
    return ResNetFeatures(depth, in_channels, width, n_layers)
