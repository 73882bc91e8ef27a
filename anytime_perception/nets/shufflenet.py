"""ShuffleNet-V2-style little network (Ma et al., 2018), strides adapted to 32x32 images.

Units split the channels in two, transform one half (1x1 conv, depthwise 3x3, 1x1 conv) and
shuffle the halves back together; a downsampling unit transforms both halves, one of them with
only a depthwise 3x3 + 1x1 branch. On 32x32 inputs the network is the ImageNet one without the
max-pooling after the stem. ``stem_stride=1`` (the default) is the common CIFAR port
(github.com/kuangliu/pytorch-cifar ``models/shufflenetv2.py``), the "original implementation"
AppealNet follows: 32 -> 16 -> 8 -> 4; at width 0.5 it has 0.35 M parameters, AppealNet's
Table 3 count. ``stem_stride=2`` (ours, the network of our published rows) halves the resolution
four times (32 -> 2) for a quarter of the MACs. ``features`` returns the globally pooled feature
vector, ``classifier`` is the linear head.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import PooledClassifier, conv_bn

__all__ = ["ShuffleNetV2", "shufflenet_v2_cifar", "WIDTHS"]

# stage output channels (stem, three stages, last 1x1 conv) per width multiplier (the paper's)
WIDTHS = {0.5: (24, 48, 96, 192, 1024), 1.0: (24, 116, 232, 464, 1024)}
REPEATS = (4, 8, 4)


def channel_shuffle(x: Tensor, groups: int = 2) -> Tensor:
    """Interleave the channels of ``groups`` equal groups."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)  # [N, C, H, W]


def _branch(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """1x1 conv-BN-ReLU, depthwise 3x3 conv-BN, 1x1 conv-BN-ReLU."""
    return nn.Sequential(conv_bn(in_channels, out_channels, 1), conv_bn(out_channels, out_channels, 3, stride,
                                                                       groups=out_channels, relu=False),
                         conv_bn(out_channels, out_channels, 1))


class ShuffleUnit(nn.Module):
    """A ShuffleNet-V2 unit: stride 1 keeps half of the channels untouched, stride 2 doubles the
    channels and halves the resolution."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = out_channels // 2
        if stride == 1:
            self.shortcut = None
            self.branch = _branch(half, half, 1)
        else:
            self.shortcut = nn.Sequential(conv_bn(in_channels, in_channels, 3, stride, groups=in_channels, relu=False),
                                          conv_bn(in_channels, half, 1))
            self.branch = _branch(in_channels, half, stride)

    def forward(self, x: Tensor) -> Tensor:
        if self.shortcut is None:
            kept, x = x.chunk(2, dim=1)
            out = torch.cat((kept, self.branch(x)), 1)
        else:
            out = torch.cat((self.shortcut(x), self.branch(x)), 1)
        return channel_shuffle(out)


class ShuffleNetV2(PooledClassifier):
    """Stem conv, three stages of shuffle units, a 1x1 conv, global average pooling, linear classifier.

    Args:
        num_classes: classifier outputs.
        width: width multiplier, a key of ``WIDTHS`` (0.5 or 1.0).
        stem_stride: stride of the first 3x3 conv (1: the CIFAR port's; 2: ours).
    """

    def __init__(self, num_classes: int = 10, width: float = 0.5, stem_stride: int = 1) -> None:
        if width not in WIDTHS:
            raise ValueError(f"ShuffleNet-V2 width must be one of {sorted(WIDTHS)}, got {width}")
        stem, *stages, last = WIDTHS[width]
        layers: list[nn.Module] = [conv_bn(3, stem, 3, stem_stride)]
        channels = stem
        for out, repeats in zip(stages, REPEATS):
            layers += [ShuffleUnit(channels if i == 0 else out, out, 2 if i == 0 else 1) for i in range(repeats)]
            channels = out
        super().__init__([*layers, conv_bn(channels, last, 1)], last, num_classes)
        self.width, self.stem_stride = width, stem_stride


def shufflenet_v2_cifar(num_classes: int = 10, width: float = 0.5, stem_stride: int = 1) -> ShuffleNetV2:
    """ShuffleNet-V2 for 32x32 images (width 0.5, 10 classes: 0.35 M parameters; stem stride 1:
    10.9 M MACs, stem stride 2: 2.7 M MACs)."""
    return ShuffleNetV2(num_classes, width, stem_stride)
