"""CIFAR ResNets (He et al., 2016, Sec. 4.2): ResNet-20/32/56/110, 6n+2 layers, 16-32-64 channels.

The network is a flat sequence of units (stem, residual blocks) followed by the head, so exit
branches and gates can be attached after any unit and the stages of an early-exit model are just
slices of ``units``.
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["BasicBlock", "CifarResNet", "resnet_cifar", "DEPTHS"]

DEPTHS = (20, 32, 44, 56, 110)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; downsampling blocks use a 1x1 strided projection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """``units[0]`` is the stem, ``units[1:]`` the residual blocks; ``head`` pools and classifies."""

    def __init__(self, depth: int = 20, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        if depth not in DEPTHS and (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 (e.g. {DEPTHS}), got {depth}")
        self.depth, self.num_classes = depth, num_classes
        blocks_per_stage = (depth - 2) // 6
        units: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                                nn.ReLU(inplace=True))]
        channels = width
        for stage in range(3):
            out = width * 2 ** stage
            for block in range(blocks_per_stage):
                units.append(BasicBlock(channels, out, 2 if stage > 0 and block == 0 else 1))
                channels = out
        self.units = nn.ModuleList(units)
        self.channels = channels
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: Tensor, start: int = 0, stop: int | None = None) -> Tensor:
        """Run ``units[start:stop]`` on ``x`` (the image when ``start`` is 0)."""
        for unit in self.units[start:stop]:
            x = unit(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def resnet_cifar(depth: int, num_classes: int = 10) -> CifarResNet:
    """ResNet-``depth`` for 32x32 images (20: 0.27 M parameters, about 41 M MACs)."""
    return CifarResNet(depth, num_classes)
