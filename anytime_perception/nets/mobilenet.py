"""MobileNet-style little network (Howard et al., 2017): depthwise-separable convolutions with a
width multiplier, for 32x32 images. Two layouts (``MobileNetConfig``):

- ``PAPER`` (the default, AppealNet's CIFAR-10 little network, which "follows the original
  implementations"): width 1, a stride-1 stem and the ImageNet network's separable blocks, as the
  common CIFAR port of MobileNet does (github.com/kuangliu/pytorch-cifar ``models/mobilenet.py``):
  32 -> 32 (stem) -> 16 -> 8 -> 4 -> 2. ``PAPER_GTSRB``: the same at width 0.5 (AppealNet
  Appendix B.4: "a width multiplier of 0.5 ... for the GTSRB").
- ``W05_S2`` (ours, the network of our published rows): width 0.5, a stride-2 stem and no
  downsampling in the last separable blocks, so it also halves the resolution four times but runs
  every block on a quarter of the pixels (about 1/11 of ``PAPER``'s MACs).

``features`` returns the globally pooled feature vector, ``classifier`` is the linear head: the
AppealNet predictor (``nets/appeal.py``) reads the same features.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .layers import PooledClassifier, conv_bn

__all__ = ["MobileNet", "MobileNetConfig", "mobilenet_cifar", "CIFAR_BLOCKS", "IMAGENET_BLOCKS", "PAPER",
           "PAPER_GTSRB", "W05_S2"]

# (output channels at width 1, stride) of the depthwise-separable blocks after the stem
IMAGENET_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
                   (512, 1), (512, 1), (1024, 2), (1024, 1))
# the ImageNet network's, but for the last downsampling (used after a stride-2 stem)
CIFAR_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
                (512, 1), (512, 1), (1024, 1), (1024, 1))


@dataclass(frozen=True)
class MobileNetConfig:
    """A MobileNet layout.

    Args:
        width: width multiplier of every layer (0.5: half the channels, about a quarter of the MACs).
        stem_stride: stride of the first 3x3 conv.
        blocks: (channels at width 1, stride) of each separable block.
    """

    width: float = 1.0
    stem_stride: int = 1
    blocks: tuple[tuple[int, int], ...] = IMAGENET_BLOCKS


PAPER = MobileNetConfig()
PAPER_GTSRB = MobileNetConfig(width=0.5)
W05_S2 = MobileNetConfig(width=0.5, stem_stride=2, blocks=CIFAR_BLOCKS)


def _scaled(channels: int, width: float) -> int:
    """Channels at ``width``, rounded to a multiple of 8 (at least 8)."""
    return max(8, int(channels * width + 4) // 8 * 8)


def _separable(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 conv-BN-ReLU, then pointwise 1x1 conv-BN-ReLU."""
    return nn.Sequential(conv_bn(in_channels, in_channels, 3, stride, groups=in_channels),
                         conv_bn(in_channels, out_channels, 1))


class MobileNet(PooledClassifier):
    """Stem conv, depthwise-separable blocks, global average pooling, linear classifier.

    Args:
        num_classes: classifier outputs.
        config: the layout (default: ``PAPER``).
    """

    def __init__(self, num_classes: int = 10, config: MobileNetConfig = PAPER) -> None:
        channels = _scaled(32, config.width)
        layers: list[nn.Module] = [conv_bn(3, channels, 3, config.stem_stride)]
        for out, stride in config.blocks:
            layers.append(_separable(channels, _scaled(out, config.width), stride))
            channels = _scaled(out, config.width)
        super().__init__(layers, channels, num_classes)
        self.config = config
        self.width = config.width


def mobilenet_cifar(num_classes: int = 10, config: MobileNetConfig = PAPER) -> MobileNet:
    """MobileNet for 32x32 images, 10 classes: ``PAPER`` 3.2 M parameters, 46.3 M MACs;
    ``PAPER_GTSRB`` 0.82 M, 12.2 M; ``W05_S2`` 0.82 M, 4.2 M."""
    return MobileNet(num_classes, config)
