"""Layer modules shared by the network families: plain conv-BN(-ReLU) and nested (any-width) layers.

A nested tensor is a list of channel groups ``[g0, g1, ...]``. Group ``g`` of a nested layer's
output reads only input groups ``<= g``: the weight matrix is block-lower-triangular, so a larger
subnet reuses every activation of the smaller ones and new neurons never feed old ones.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["conv_bn", "PooledClassifier", "NestedConvBNReLU", "StageHead", "batch_norm_channels",
           "check_detector_size"]


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
            relu: bool = True) -> nn.Sequential:
    """Conv (no bias, ``kernel_size // 2`` padding) + BatchNorm, then ReLU unless ``relu`` is False;
    ``groups == in_channels`` makes it depthwise."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                                         groups=groups, bias=False), nn.BatchNorm2d(out_channels)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class PooledClassifier(nn.Module):
    """Convolutional ``layers``, global average pooling and a linear ``classifier``; ``features``
    is the pooled vector (AppealNet's predictor reads it too). Convs get Kaiming (fan-out) init.

    Args:
        layers: the convolutional body, image in, ``num_features`` channels out.
        num_features: channels of the body's output.
        num_classes: classifier outputs.
    """

    def __init__(self, layers: Sequence[nn.Module], num_features: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features, self.num_classes = num_features, num_classes
        self.classifier = nn.Linear(num_features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: Tensor) -> Tensor:
        """Pooled features ``[N, num_features]`` of images ``[N, 3, H, W]``."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # [N, num_classes]


class NestedConvBNReLU(nn.Module):
    """Conv-BN-ReLU split into output groups; group ``g`` sees input groups ``0..g`` only.

    Args:
        in_groups: channels of each input group. With ``shared_input`` a single tensor (e.g. the
            image) that every output group reads in full.
        out_groups: channels of each output group.
        kernel_size: square kernel size.
        stride: convolution stride.
        padding: zero padding (default ``kernel_size // 2``; 0 for a patchify stem).
        shared_input: every group reads the whole of ``in_groups[0]`` (used by the stem).
    """

    def __init__(
        self,
        in_groups: Sequence[int],
        out_groups: Sequence[int],
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        shared_input: bool = False,
    ) -> None:
        super().__init__()
        self.shared_input = shared_input
        self.blocks = nn.ModuleList()
        for g, out_ch in enumerate(out_groups):
            in_ch = in_groups[0] if shared_input else sum(in_groups[: g + 1])
            self.blocks.append(
                nn.Sequential(
                    nn.Conv2d(in_ch, out_ch, kernel_size, stride,
                              kernel_size // 2 if padding is None else padding, bias=False),
                    nn.BatchNorm2d(out_ch),
                    nn.ReLU(inplace=True),
                )
            )

    @property
    def num_groups(self) -> int:
        return len(self.blocks)

    def forward_group(self, inputs: Sequence[Tensor], g: int) -> Tensor:
        """Compute output group ``g`` from input groups ``inputs[0..g]`` (or the shared input)."""
        x = inputs[0] if self.shared_input else torch.cat(list(inputs[: g + 1]), dim=1)
        return self.blocks[g](x)


class StageHead(nn.Module):
    """CenterNet-style head of one stage: class heatmap, box size and centre offset.

    Outputs (``N`` batch, ``C`` classes, ``H x W`` the output grid):
        ``heatmap`` [N, C, H, W] logits, ``size`` [N, 2, H, W] log box size in grid cells,
        ``offset`` [N, 2, H, W] logits of the sub-cell centre offset.
    """

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 48) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, 1, 1, groups=_depthwise_groups(in_channels, hidden)),
            nn.ReLU(inplace=True),
        )
        self.heatmap = nn.Conv2d(hidden, num_classes, 1)
        self.size = nn.Conv2d(hidden, 2, 1)
        self.offset = nn.Conv2d(hidden, 2, 1)
        nn.init.constant_(self.heatmap.bias, -2.19)  # prior 0.1 (CenterNet focal-loss init)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.trunk(x)
        return {"heatmap": self.heatmap(h), "size": self.size(h), "offset": self.offset(h)}


def _depthwise_groups(in_channels: int, out_channels: int) -> int:
    """Largest group count dividing both channel counts, at most 8: keeps the head cheap."""
    for groups in (8, 4, 2):
        if in_channels % groups == 0 and out_channels % groups == 0:
            return groups
    return 1


def batch_norm_channels(bn: nn.BatchNorm2d, x: Tensor, idx: Tensor, r: Tensor | None = None) -> Tensor:
    """BatchNorm ``bn`` of its channels ``idx`` (``x`` holds just those), in the mode of ``bn``; in
    training the running statistics of those channels are written back. ``r`` (optional, one per
    channel): importance scales multiplying the normalised sum before the shift (SteppingNet's Eq. 1
    with BatchNorm)."""
    mean, var = bn.running_mean[idx], bn.running_var[idx]
    weight = bn.weight[idx] if r is None else bn.weight[idx] * r
    y = F.batch_norm(x, mean, var, weight, bn.bias[idx], bn.training, bn.momentum, bn.eps)
    if bn.training:
        with torch.no_grad():
            bn.running_mean[idx], bn.running_var[idx] = mean, var
    return y


def check_detector_size(num_classes: int, input_size: int, max_stride: int) -> None:
    """A detector config's class count and input size: ValueError naming the problem (and, for
    the size, the nearest valid one)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, not {num_classes}")
    if input_size <= 0 or input_size % max_stride:
        raise ValueError(f"input size {input_size} is not a positive multiple of the network stride "
                         f"{max_stride} (e.g. {max(1, round(input_size / max_stride)) * max_stride})")
