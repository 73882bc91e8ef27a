"""AppealNet (Li et al., DATE 2021): a little network with two heads on one feature extractor.

The *approximator* is the little network's own classifier; the *predictor* ``q(x)`` reads the same
pooled features and ends in a sigmoid: how likely the little answer is good enough (high: answer
on the little network, low: appeal to the big network).

Predictor heads (``PREDICTOR_HEADS``):

- ``linear`` (the default, the paper's): "For the predictor head used in AppealNet, we simply
  employ a single fully-connected layer to keep the design overhead minimum" (Sec. 4.1; the
  "several cascaded fully-connected layers" of that paragraph are the *approximator* head).
- ``mlp`` (our option): two fully connected layers with a ReLU between them (``MLP_HIDDEN`` units).

Little backbones (``LITTLE_NETS``, any module with ``features(x) -> [N, F]``, ``classifier`` and
``num_features``), by name, so a checkpoint's ``arch`` rebuilds its network:

- ``mobilenet``: the paper's CIFAR-10 little network (full width, stride-1 stem; ``nets/mobilenet.py``);
- ``mobilenet_w05``: the paper's GTSRB little network (width 0.5, stride-1 stem);
- ``mobilenet_w05_s2``: ours, the network of our published rows (width 0.5, stride-2 stem);
- ``shufflenet``: ShuffleNet-V2 0.5x with the CIFAR port's stride-1 stem;
- ``shufflenet_s2``: ours, the published rows' (0.5x, stride-2 stem).
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import Tensor, nn

from .mobilenet import PAPER, PAPER_GTSRB, W05_S2, mobilenet_cifar
from .shufflenet import shufflenet_v2_cifar

__all__ = ["LITTLE_NETS", "LITTLE_LAYOUT", "PAPER_LITTLE", "little_arch", "PREDICTOR_HEADS", "MLP_HIDDEN",
           "build_little", "predictor_head", "AppealNet", "appealnet"]

LITTLE_NETS: dict[str, Callable[[int], nn.Module]] = {
    "mobilenet": partial(mobilenet_cifar, config=PAPER),
    "mobilenet_w05": partial(mobilenet_cifar, config=PAPER_GTSRB),
    "mobilenet_w05_s2": partial(mobilenet_cifar, config=W05_S2),
    "shufflenet": partial(shufflenet_v2_cifar, width=0.5, stem_stride=1),
    "shufflenet_s2": partial(shufflenet_v2_cifar, width=0.5, stem_stride=2),
}
# the paper's little network per dataset (AppealNet Appendix B.4); ours: the ``_s2`` names
PAPER_LITTLE = {"cifar10": "mobilenet", "gtsrb": "mobilenet_w05"}
# Before the paper's networks took these names, they built ours: checkpoint metadata without
# ``little_layout`` (written before) names the network by its old meaning.
LEGACY_LITTLE = {"mobilenet": "mobilenet_w05_s2", "shufflenet": "shufflenet_s2"}
LITTLE_LAYOUT = 2


def little_arch(meta: dict) -> str:
    """The little network a checkpoint's metadata means (old names mapped to what they built)."""
    arch = meta["arch"]
    return arch if meta.get("little_layout", 1) >= LITTLE_LAYOUT else LEGACY_LITTLE.get(arch, arch)
PREDICTOR_HEADS = ("linear", "mlp")
MLP_HIDDEN = 128


def build_little(arch: str, num_classes: int) -> nn.Module:
    """A little network by name; raises ValueError listing the known names."""
    if arch not in LITTLE_NETS:
        raise ValueError(f"unknown little network {arch!r}; known: {', '.join(sorted(LITTLE_NETS))}")
    return LITTLE_NETS[arch](num_classes)


def predictor_head(kind: str, num_features: int, hidden: int = MLP_HIDDEN) -> nn.Module:
    """The predictor's layers before the sigmoid, ``[N, F] -> [N, 1]``: ``linear`` or ``mlp``."""
    if kind == "linear":
        return nn.Linear(num_features, 1)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))
    raise ValueError(f"unknown predictor head {kind!r}; known: {', '.join(PREDICTOR_HEADS)}")


class AppealNet(nn.Module):
    """A little network whose pooled features also feed the predictor head ``q(x)``.

    Loading a state dict rebuilds the predictor head its weights describe (``linear`` or ``mlp``,
    any hidden size), so a checkpoint rebuilt with the default head loads either kind.

    Args:
        little: the backbone and approximator (``features``, ``classifier``, ``num_features``).
        head: the predictor head, one of ``PREDICTOR_HEADS`` (default: the paper's ``linear``).
    """

    def __init__(self, little: nn.Module, head: str = "linear") -> None:
        super().__init__()
        self.little = little
        self.head = head
        self.predictor = predictor_head(head, little.num_features)
        self._register_load_state_dict_pre_hook(self._match_head)

    def _match_head(self, state_dict: dict, prefix: str, *_) -> None:
        """Before loading: make ``predictor`` the head the incoming weights describe."""
        if f"{prefix}predictor.weight" in state_dict:
            head, hidden = "linear", MLP_HIDDEN
        elif f"{prefix}predictor.0.weight" in state_dict:
            head, hidden = "mlp", state_dict[f"{prefix}predictor.0.weight"].shape[0]
        else:
            return  # let load_state_dict report the missing keys
        if head != self.head or (head == "mlp" and self.predictor[0].out_features != hidden):
            self.head = head
            self.predictor = predictor_head(head, self.little.num_features, hidden)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.little.features(x)  # [N, F]
        return {"logits": self.little.classifier(features),  # [N, classes]
                "q": torch.sigmoid(self.predictor(features)).squeeze(1)}  # [N]


def appealnet(arch: str, num_classes: int, head: str = "linear") -> AppealNet:
    """AppealNet on the little network ``arch`` (a key of ``LITTLE_NETS``) with predictor ``head``."""
    return AppealNet(build_little(arch, num_classes), head)
