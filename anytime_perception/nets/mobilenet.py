"""MobileNet-style little network (Howard et al., 2017): depthwise-separable convolutions with a
width multiplier, strides adapted to 32x32 images.

The ImageNet network halves the resolution five times (224 -> 7); on 32x32 inputs this one keeps
the last separable block at stride 1, so it halves it four times (32 -> 2). ``features`` returns the
globally pooled feature vector, ``classifier`` is the linear head: the AppealNet predictor
(``nets/appeal.py``) reads the same features.
"""
from __future__ import annotations

from torch import nn

from .layers import PooledClassifier, conv_bn

__all__ = ["MobileNet", "mobilenet_cifar", "CIFAR_BLOCKS"]

# (output channels at width 1, stride) of the depthwise-separable blocks after the stride-2 stem:
# the ImageNet network's, but for the last downsampling
CIFAR_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
                (512, 1), (512, 1), (1024, 1), (1024, 1))


def _scaled(channels: int, width: float) -> int:
    """Channels at ``width``, rounded to a multiple of 8 (at least 8)."""
    return max(8, int(channels * width + 4) // 8 * 8)


def _separable(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 conv-BN-ReLU, then pointwise 1x1 conv-BN-ReLU."""
    return nn.Sequential(conv_bn(in_channels, in_channels, 3, stride, groups=in_channels),
                         conv_bn(in_channels, out_channels, 1))


class MobileNet(PooledClassifier):
    """Stride-2 stem conv, depthwise-separable ``blocks``, global average pooling, linear classifier.

    Args:
        num_classes: classifier outputs.
        width: width multiplier of every layer (0.5: half the channels, about a quarter of the MACs).
        blocks: (channels at width 1, stride) of each separable block.
    """

    def __init__(self, num_classes: int = 10, width: float = 0.5,
                 blocks: tuple[tuple[int, int], ...] = CIFAR_BLOCKS) -> None:
        channels = _scaled(32, width)
        layers: list[nn.Module] = [conv_bn(3, channels, 3, 2)]
        for out, stride in blocks:
            layers.append(_separable(channels, _scaled(out, width), stride))
            channels = _scaled(out, width)
        super().__init__(layers, channels, num_classes)
        self.width = width


def mobilenet_cifar(num_classes: int = 10, width: float = 0.5) -> MobileNet:
    """MobileNet for 32x32 images (width 0.5, 10 classes: 0.82 M parameters, 4.2 M MACs)."""
    return MobileNet(num_classes, width)
