"""AppealNet (Li et al., DAC 2021): a little network with two heads on one feature extractor.

The *approximator* is the little network's own classifier; the *predictor* ``q(x)`` is one fully
connected layer + sigmoid on the same pooled features: how likely the little answer is good
enough (high: answer on the little network, low: appeal to the big network). Little backbones:
``LITTLE_NETS`` (any module with ``features(x) -> [N, F]``, ``classifier`` and ``num_features``).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .mobilenet import mobilenet_cifar
from .shufflenet import shufflenet_v2_cifar

__all__ = ["LITTLE_NETS", "build_little", "AppealNet", "appealnet"]

LITTLE_NETS: dict[str, Callable[[int], nn.Module]] = {"mobilenet": mobilenet_cifar, "shufflenet": shufflenet_v2_cifar}


def build_little(arch: str, num_classes: int) -> nn.Module:
    """A little network by name; raises ValueError listing the known names."""
    if arch not in LITTLE_NETS:
        raise ValueError(f"unknown little network {arch!r}; known: {', '.join(sorted(LITTLE_NETS))}")
    return LITTLE_NETS[arch](num_classes)


class AppealNet(nn.Module):
    """A little network whose pooled features also feed the predictor head ``q(x)``.

    Args:
        little: the backbone and approximator (``features``, ``classifier``, ``num_features``).
    """

    def __init__(self, little: nn.Module) -> None:
        super().__init__()
        self.little = little
        self.predictor = nn.Linear(little.num_features, 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.little.features(x)  # [N, F]
        return {"logits": self.little.classifier(features),  # [N, classes]
                "q": torch.sigmoid(self.predictor(features)).squeeze(1)}  # [N]


def appealnet(arch: str, num_classes: int) -> AppealNet:
    """AppealNet on the little network ``arch`` (a key of ``LITTLE_NETS``)."""
    return AppealNet(build_little(arch, num_classes))
