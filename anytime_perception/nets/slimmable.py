"""Slimmable classifier (Yu et al., 2019): one set of shared weights run at fixed width ratios.

Subnet ``i`` keeps the first ``ratio_i`` of the channels/units of every hidden layer and is a
dense network over them, with its own (switchable) BatchNorm. Unlike SteppingNet, a wider subnet
recomputes everything: its neurons read the new channels too. The SteppingNet baseline.
"""
from __future__ import annotations

import math

from torch import Tensor, nn
from torch.nn import functional as F

from .stepping import SteppingSpec

__all__ = ["SlimmableClassifier"]


class SlimmableClassifier(nn.Module):
    """``spec`` at widths ``ratios`` (ascending, each in (0, 1])."""

    def __init__(self, spec: SteppingSpec, ratios: tuple[float, ...]) -> None:
        super().__init__()
        if not ratios or any(not 0 < r <= 1 for r in ratios) or list(ratios) != sorted(ratios):
            raise ValueError(f"ratios must be ascending values in (0, 1], got {ratios}")
        self.spec, self.ratios = spec, tuple(ratios)
        channels = [3] + [c.channels for c in spec.convs]
        self.convs = nn.ModuleList(nn.Conv2d(i, c.channels, c.kernel, padding=c.padding, bias=False)
                                   for i, c in zip(channels, spec.convs))
        self.norms = nn.ModuleList(nn.ModuleList(nn.BatchNorm2d(self.width(c.channels, r)) for r in ratios)
                                   for c in spec.convs)
        if spec.head != "linear":
            raise ValueError(f"{spec.name}: the slimmable baseline is built for linear-head classifiers")
        self.conv_out_hw, self.flat_hw = spec.geometry()
        features = [channels[-1] * self.flat_hw] + list(spec.hidden)
        self.fcs = nn.ModuleList(nn.Linear(i, o) for i, o in zip(features, spec.hidden))
        self.out = nn.Linear(features[-1], spec.num_classes)

    @property
    def num_subnets(self) -> int:
        return len(self.ratios)

    @staticmethod
    def width(channels: int, ratio: float) -> int:
        return max(1, math.ceil(channels * ratio - 1e-9))

    def _widths(self, subnet: int) -> list[int]:
        r = self.ratios[subnet]
        return [self.width(c.channels, r) for c in self.spec.convs] + [self.width(h, r) for h in self.spec.hidden]

    def macs(self, subnet: int) -> int:
        """Multiply-accumulates of subnet ``subnet``."""
        widths, total, fan_in = self._widths(subnet), 0, 3
        for l, c in enumerate(self.spec.convs):
            total += self.conv_out_hw[l] * c.kernel ** 2 * fan_in * widths[l]
            fan_in = widths[l]
        fan_in *= self.flat_hw
        for width in widths[len(self.spec.convs):] + [self.spec.num_classes]:
            total += fan_in * width
            fan_in = width
        return total

    def forward(self, image: Tensor, subnet: int | None = None) -> Tensor:
        """Logits of subnet ``subnet`` (default: the widest)."""
        subnet = self.num_subnets - 1 if subnet is None else subnet
        widths, x, fan_in = self._widths(subnet), image, 3
        for l, c in enumerate(self.spec.convs):
            w = self.convs[l].weight[: widths[l], :fan_in]
            x = F.relu(self.norms[l][subnet](F.conv2d(x, w, stride=c.stride, padding=c.padding, dilation=c.dilation)))
            x = F.max_pool2d(x, 2) if c.pool else x
            fan_in = widths[l]
        x = x.flatten(1)
        fan_in *= self.flat_hw
        for fc, width in zip(self.fcs, widths[len(self.spec.convs):]):
            x = F.relu(F.linear(x, fc.weight[:width, :fan_in], fc.bias[:width]))
            fan_in = width
        return F.linear(x, self.out.weight[:, :fan_in], self.out.bias)

    def forward_all(self, image: Tensor) -> list[Tensor]:
        """Logits of every subnet (each a separate, full pass: nothing is shared)."""
        return [self(image, i) for i in range(self.num_subnets)]

    def weight_owners(self) -> list[tuple[nn.Parameter, Tensor]]:
        """No level ownership: every subnet trains every weight it uses at the full rate."""
        return []


def fit_ratios(spec: SteppingSpec, targets: list[int]) -> tuple[float, ...]:
    """Width ratios whose slimmable subnets come closest to (not above) each MAC target."""
    ratios = []
    for target in targets:
        lo, hi = 1e-3, 1.0
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if SlimmableClassifier(spec, (mid,)).macs(0) <= target else (lo, mid)
        ratios.append(lo)
    return tuple(ratios)
