"""Early exits on a frozen pre-trained backbone: PTEEnet ConvX branches and decision gates.

- ``exit_points``: where branches go, by the EEnet/PTEEnet cost-distribution methods (exit n is
  placed after the first backbone unit whose cumulative cost reaches the n-th fraction).
- ``ConvXBranch``: X conv blocks, global pooling, a classification head and a sigmoid confidence
  head (Lahiany & Aperstein, PTEEnet).
- ``DecisionGate``: one linear layer on the globally pooled features (Shafiee et al., d-gates); its
  score per class doubles as the exit classifier, its largest score as the confidence. ``score``:
  ``raw`` ``max_c (w_c^T x + b_c)`` as in the paper's Algorithm 1 (default; the paper's thresholds
  are on this scale), or ``normalised`` ``max_c (w_c^T x + b_c) / ||w_c||`` (ours: the Euclidean
  distance to each class boundary; what checkpoints from before the option computed).
- ``main_block_points``: the paper's gate placement, after each main block (ResNet stage) but the last.
- ``EarlyExitNet``: backbone units sliced at the exit points, one branch (or gate) per exit, the
  backbone's own head as the last exit. ``stage(k)`` is what the k-th anytime stage computes.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .macs import counted_macs
from .resnet_cifar import CifarResNet

__all__ = ["PLACEMENTS", "MAIN_BLOCKS", "GATE_SCORES", "cost_fractions", "exit_points", "main_block_points",
           "placement_points", "ConvXBranch", "DecisionGate", "EarlyExitNet", "unit_macs", "stage_macs"]

GOLDEN = (1 + math.sqrt(5)) / 2
PLACEMENTS = ("pareto", "fine", "golden", "linear")  # cost distributions (EEnet / PTEEnet)
MAIN_BLOCKS = "main_blocks"  # the d-gate paper's placement: after every main block but the last
GATE_SCORES = ("raw", "normalised")


def cost_fractions(method: str, num_exits: int) -> list[float]:
    """Target cumulative-cost fractions of the exits: Pareto 1 - 0.8^n, Fine 1 - 0.95^n,
    Golden phi^(n - N - 1) and Linear n / (N + 1), n = 1..N."""
    n = range(1, num_exits + 1)
    if method == "pareto":
        return [1 - 0.8 ** i for i in n]
    if method == "fine":
        return [1 - 0.95 ** i for i in n]
    if method == "golden":
        return [GOLDEN ** (i - num_exits - 1) for i in n]
    if method == "linear":
        return [i / (num_exits + 1) for i in n]
    raise ValueError(f"unknown placement {method!r}; expected one of {', '.join(PLACEMENTS)}")


def exit_points(unit_macs: list[int], num_exits: int, method: str = "fine") -> list[int]:
    """Indices of the units after which exits attach: exit n goes after the first unit past exit
    n - 1 whose cumulative MACs reach the n-th fraction (as EEnet adds them while walking the
    layers). Never after the last unit: that is the backbone's own exit."""
    if num_exits > len(unit_macs) - 1:
        raise ValueError(f"{num_exits} exits do not fit in {len(unit_macs)} units")
    total, cumulative = sum(unit_macs), 0
    reached = []
    for macs in unit_macs:
        cumulative += macs
        reached.append(cumulative / total)
    points: list[int] = []
    for n, fraction in enumerate(cost_fractions(method, num_exits)):
        first = points[-1] + 1 if points else 0
        last = len(unit_macs) - 1 - (num_exits - n)  # leave room for the remaining exits
        points.append(next((i for i in range(first, last + 1) if reached[i] >= fraction - 1e-9), last))
    return points


def main_block_points(backbone: CifarResNet) -> list[int]:
    """Unit indices ending each main block (ResNet stage) but the last: where the d-gate paper
    puts its gates ("after each of the first three computational blocks" of ResNet-101; a CIFAR
    ResNet has three stages, so two gates). ``units[0]`` is the stem."""
    per_stage = (backbone.depth - 2) // 6
    return [per_stage * stage for stage in (1, 2)]


def placement_points(backbone: CifarResNet, placement: str, num_exits: int | None = None,
                     input_size: int = 32) -> list[int]:
    """Exit points by ``placement``: ``main_blocks`` or a cost distribution (``num_exits`` exits,
    3 when not given). ``main_blocks`` fixes the number of exits; a different ``num_exits`` is an error."""
    if placement == MAIN_BLOCKS:
        points = main_block_points(backbone)
        if num_exits is not None and num_exits != len(points):
            raise ValueError(f"placement {MAIN_BLOCKS} gives {len(points)} exits (after units {points}), "
                             f"not {num_exits}")
        return points
    return exit_points(unit_macs(backbone, input_size), 3 if num_exits is None else num_exits, placement)


class ConvXBranch(nn.Module):
    """``convs`` 3x3 conv-BN-ReLU blocks (the first strided while the map is larger than 8x8),
    global average pooling, then ``classifier`` (logits) and ``confidence`` (sigmoid) heads."""

    def __init__(self, in_channels: int, num_classes: int, convs: int = 1, width: int = 32,
                 feature_size: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, feature_size
        for _ in range(convs):
            stride = 2 if size > 8 else 1
            layers += [nn.Conv2d(channels, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            channels, size = width, size // stride
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(channels, num_classes)
        self.confidence = nn.Linear(channels, 1)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        pooled = self.body(features)
        return self.classifier(pooled), torch.sigmoid(self.confidence(pooled)).squeeze(1)


class DecisionGate(nn.Module):
    """A single linear layer on the globally pooled feature map (one score per class).

    Args:
        in_channels: channels of the feature map it reads.
        num_classes: one score ``f_c = w_c^T x + b_c`` per class.
        score: ``raw`` (the paper's Algorithm 1: ``max_c f_c``) or ``normalised`` (``max_c f_c / ||w_c||``).
            Kept in the state dict (buffer ``normalise``), so a checkpoint carries its formula into
            export; a state dict without it (from before the option) loads as ``normalised``.
    """

    def __init__(self, in_channels: int, num_classes: int, score: str = "raw") -> None:
        super().__init__()
        if score not in GATE_SCORES:
            raise ValueError(f"gate score must be one of {', '.join(GATE_SCORES)}, got {score!r}")
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.linear = nn.Linear(in_channels, num_classes)
        self.register_buffer("normalise", torch.tensor(float(score == "normalised")))
        self.score = score  # mirrors the buffer as a Python value (no tensor-to-bool while tracing)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Class scores ``[N, C]`` and the gate's confidence ``[N]``: the largest score, divided
        by ``||w_c||`` when normalised."""
        scores = self.linear(self.pool(features))  # [N, C]
        if self.score == "normalised":
            return scores, (scores / self.linear.weight.norm(dim=1).clamp_min(1e-12)).max(dim=1).values
        return scores, scores.max(dim=1).values

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        if prefix + "normalise" not in state_dict:  # saved before the option: it always normalised
            state_dict[prefix + "normalise"] = torch.tensor(1.0)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self.score = "normalised" if float(self.normalise) else "raw"


class EarlyExitNet(nn.Module):
    """A frozen backbone with one exit head after each unit in ``points``; the last exit is the
    backbone's head (confidence 1). ``kind``: ``branch`` (ConvX) or ``gate`` (decision gates, with
    ``gate_score`` their confidence formula)."""

    def __init__(self, backbone: CifarResNet, points: list[int], kind: str = "branch", convs: int = 1,
                 input_size: int = 32, gate_score: str = "raw") -> None:
        super().__init__()
        if kind not in ("branch", "gate"):
            raise ValueError(f"kind must be 'branch' or 'gate', got {kind!r}")
        if not points or points != sorted(set(points)) or points[-1] >= len(backbone.units) - 1 or points[0] < 0:
            raise ValueError(f"exit points must be increasing unit indices below {len(backbone.units) - 1}: {points}")
        self.backbone, self.points, self.kind = backbone, list(points), kind
        for p in backbone.parameters():
            p.requires_grad_(False)
        shapes = self._feature_shapes(input_size)
        self.heads = nn.ModuleList(
            ConvXBranch(c, backbone.num_classes, convs, max(32, c), s) if kind == "branch"
            else DecisionGate(c, backbone.num_classes, gate_score)
            for c, s in shapes)

    @torch.no_grad()
    def _feature_shapes(self, size: int) -> list[tuple[int, int]]:
        x, shapes = torch.zeros(1, 3, size, size), []
        self.backbone.eval()
        for i, unit in enumerate(self.backbone.units):
            x = unit(x)
            if i in self.points:
                shapes.append((x.shape[1], x.shape[2]))
        return shapes

    @property
    def num_exits(self) -> int:
        """Exits including the backbone's own."""
        return len(self.points) + 1

    def unit_ranges(self) -> list[tuple[int, int]]:
        """Backbone units ``[start, stop)`` each stage runs."""
        bounds = [0] + [p + 1 for p in self.points] + [len(self.backbone.units)]
        return list(zip(bounds[:-1], bounds[1:]))

    def stage(self, k: int, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Stage ``k`` from the previous stage's feature map (the image for k = 0): the new feature
        map (carry), the exit's logits and its confidence."""
        start, stop = self.unit_ranges()[k]
        features = self.backbone.features(x, start, stop)
        if k == len(self.points):
            logits = self.backbone.head(features)
            return features, logits, torch.ones_like(logits[:, 0])
        logits, confidence = self.heads[k](features)
        return features, logits, confidence

    def forward_all(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        """(logits, confidence) of every exit, the backbone's last."""
        outputs = []
        for k in range(self.num_exits):
            x, logits, confidence = self.stage(k, x)
            outputs.append((logits, confidence))
        return outputs

    def train(self, mode: bool = True) -> "EarlyExitNet":
        """Heads follow ``mode``; the frozen backbone always stays in eval (BatchNorm statistics kept)."""
        super().train(mode)
        self.backbone.eval()
        return self


@torch.no_grad()
def unit_macs(backbone: CifarResNet, input_size: int = 32) -> list[int]:
    """MACs of every backbone unit (stem, blocks), counted by hooks."""
    x, macs = torch.zeros(1, 3, input_size, input_size), []
    backbone.eval()
    for unit in backbone.units:
        macs.append(counted_macs(lambda: unit(x), unit))
        x = unit(x)
    return macs


def stage_macs(net: EarlyExitNet, input_size: int = 32) -> list[int]:
    """Incremental MACs of every stage (backbone slice + exit head), counted by hooks."""
    x, macs = torch.zeros(1, 3, input_size, input_size), []
    net.eval()
    for k in range(net.num_exits):
        macs.append(counted_macs(lambda: net.stage(k, x), net))
        with torch.no_grad():
            x = net.stage(k, x)[0]
    return macs
