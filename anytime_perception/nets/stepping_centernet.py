"""SteppingNet detector on the shipped detector's architecture: neurons assigned to stages by a
learned level instead of fixed channel groups.

The layers are ``anywidth_centernet_patch_s3``'s (4x4/4 patch stem, backbone to stride 32, top-down
neck back to stride 8, one ``StageHead`` per stage), every layer widened by ``expansion`` (the
paper's 1.8 by default) before SteppingNet's construction (``training.stepping_detector``) moves
neurons out of the small subnets. Every hidden neuron has a *level*: the first stage that computes
it (``num_stages``: removed). A neuron reads only inputs of its level or lower, so stage ``k``
computes exactly the level-``k`` neurons from the carry of stages ``< k`` (``"<layer>.<level>"``)
and nothing is recomputed; an any-width network is the special case where every layer's levels are
contiguous blocks.

The last hidden layer (``neck``) is the stage heads' input. Its levels are pinned to the shipped
model's neck groups (``neck_levels``, not expanded, never moved): stage ``k``'s head reads the neck
neurons of level ``<= k`` and is the shipped head of the same width, trained by stage ``k``'s loss
alone. That is the rule against parking the last layer's increments where the loss has no gradient
(a shared additive output layer let the construction do so; ``docs/results/steppingnet.md``,
Detector).

MACs (``macs``) are counted from the levels as the exported dense graphs execute them; the export
test checks them against the graphs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .layers import StageHead, _depthwise_groups, batch_norm_channels, check_detector_size

__all__ = ["SteppingCenterNetConfig", "SteppingCenterNet", "LAYOUT", "stepping_centernet_patch_s3",
           "PAPER_EXPANSION"]

Carry = dict[str, Tensor]
PAPER_EXPANSION = 1.8  # the paper's ratio for its CNNs (LeNet-3C1L, VGG-16); LeNet-5: 2.0


@dataclass(frozen=True)
class Layer:
    """One conv-BN-ReLU layer: ``inputs`` are earlier layers (or ``image``), concatenated; a name
    ending in ``^`` is upsampled 2x (nearest) first. ``width`` names the entry of the widths."""

    name: str
    inputs: tuple[str, ...]
    width: str
    kernel: int = 3
    stride: int = 1
    padding: int = 1


LAYOUT = (
    Layer("stem", ("image",), "stem", 4, 4, 0),  # /4
    Layer("c2a", ("stem",), "c2"), Layer("c2b", ("c2a",), "c2"),
    Layer("c3a", ("c2b",), "c3", stride=2), Layer("c3b", ("c3a",), "c3"),  # /8
    Layer("c4a", ("c3b",), "c4", stride=2), Layer("c4b", ("c4a",), "c4"),  # /16
    Layer("c5a", ("c4b",), "c5", stride=2), Layer("c5b", ("c5a",), "c5"),  # /32
    Layer("p4", ("c5b^", "c4b"), "c4", 1, 1, 0),  # /16
    Layer("p3", ("p4^", "c3b"), "neck", 1, 1, 0),  # /8
    Layer("neck", ("p3",), "neck"),
)
STRIDES = {"stem": 4, "c2a": 4, "c2b": 4, "c3a": 8, "c3b": 8, "c4a": 16, "c4b": 16, "c5a": 32, "c5b": 32,
           "p4": 16, "p3": 8, "neck": 8}


@dataclass(frozen=True)
class SteppingCenterNetConfig:
    """The original (unexpanded) widths are the shipped detector's; ``neck_levels``: neck neurons
    per stage (the shipped neck groups, the heads' input widths)."""

    num_classes: int
    input_size: int = 320
    expansion: float = PAPER_EXPANSION
    widths: dict[str, int] = field(
        default_factory=lambda: {"stem": 20, "c2": 40, "c3": 80, "c4": 160, "c5": 160, "neck": 80})
    neck_levels: tuple[int, ...] = (16, 24, 40)
    head_hidden: int = 48
    output_stride: int = 8
    offset_range: int = 0
    max_stride = 32

    def __post_init__(self) -> None:
        check_detector_size(self.num_classes, self.input_size, self.max_stride)
        if self.expansion < 1.0:
            raise ValueError(f"expansion must be >= 1 (the original network widened), not {self.expansion}")

    def layer_width(self, layer: Layer, expanded: bool = True) -> int:
        """Neurons of ``layer``: the original width times ``expansion``; the neck keeps its pinned width."""
        if layer.name == "neck":
            return sum(self.neck_levels)
        width = self.widths[layer.width]
        return max(1, round(width * self.expansion)) if expanded else width


class SteppingCenterNet(nn.Module):
    """Implements ``contract.AnytimeDetector``; ``levels``/``set_levels``/``level_counts``/``macs``
    are what the construction (``training.stepping.move_neurons``) works on."""

    def __init__(self, config: SteppingCenterNetConfig) -> None:
        super().__init__()
        self.config = config
        self.layout = LAYOUT
        self.num_subnets = len(config.neck_levels)
        self.widths = [config.layer_width(layer) for layer in LAYOUT]
        self._index = {layer.name: i for i, layer in enumerate(LAYOUT)}
        self.convs = nn.ModuleDict()
        self.norms = nn.ModuleDict()
        for layer, width in zip(LAYOUT, self.widths):
            self.convs[layer.name] = nn.Conv2d(self._in_width(layer), width, layer.kernel, layer.stride,
                                               layer.padding, bias=False)
            self.norms[layer.name] = nn.BatchNorm2d(width)
            self.register_buffer(f"level_{layer.name}", torch.zeros(width, dtype=torch.long))
        cumulative = np.cumsum(config.neck_levels)
        self.heads = nn.ModuleList(StageHead(int(n), config.num_classes, config.head_hidden) for n in cumulative)
        neck = torch.repeat_interleave(torch.arange(self.num_subnets), torch.tensor(config.neck_levels))
        self.levels(len(LAYOUT) - 1).copy_(neck)
        self._groups: list[list[Tensor]] | None = None

    # ---- structure (what the construction uses) ------------------------------------------------

    @property
    def num_stages(self) -> int:
        return self.num_subnets

    @property
    def num_hidden(self) -> int:
        return len(LAYOUT)

    @property
    def neck_index(self) -> int:
        return len(LAYOUT) - 1

    def _in_width(self, layer: Layer) -> int:
        return sum(3 if src == "image" else self.widths[self._index[src.rstrip("^")]] for src in layer.inputs)

    def levels(self, l: int) -> Tensor:
        """Level of every neuron of layer ``l`` (``num_stages``: removed)."""
        return getattr(self, f"level_{LAYOUT[l].name}")

    def set_levels(self, l: int, levels: Tensor) -> None:
        if levels.shape != self.levels(l).shape or levels.min() < 0 or levels.max() > self.num_subnets:
            raise ValueError(f"layer {LAYOUT[l].name}: levels must have shape {tuple(self.levels(l).shape)} "
                             f"and values in 0..{self.num_subnets}")
        self.levels(l).copy_(levels)
        self._groups = None

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # the levels come with the state
        super()._load_from_state_dict(*args, **kwargs)
        self._groups = None

    def level_counts(self) -> Tensor:
        """[layers, num_stages + 1]: neurons of each level (last column: removed) per layer."""
        return torch.stack([torch.bincount(self.levels(l), minlength=self.num_subnets + 1)
                            for l in range(self.num_hidden)])

    def groups(self, l: int) -> list[Tensor]:
        """Indices of layer ``l``'s neurons at each level (constants: the export folds them)."""
        if self._groups is None:
            self._groups = [[torch.tensor([j for j, v in enumerate(self.levels(h).tolist()) if v == k],
                                          dtype=torch.long) for k in range(self.num_subnets)]
                            for h in range(self.num_hidden)]
        return self._groups[l]

    def _input_levels(self, layer: Layer) -> np.ndarray:
        parts = [np.zeros(3, np.int64) if src == "image" else self.levels(self._index[src.rstrip("^")]).cpu().numpy()
                 for src in layer.inputs]
        return np.concatenate(parts)

    def _positions(self, layer: Layer) -> int:
        side = self.config.input_size // STRIDES[layer.name]
        return side * side

    def head_macs(self, k: int) -> int:
        """MACs of stage ``k``'s head (grouped 3x3 trunk and the 1x1 outputs) on its neck input."""
        n = int(sum(self.config.neck_levels[: k + 1]))
        hidden = self.config.head_hidden
        positions = (self.config.input_size // self.config.output_stride) ** 2
        trunk = hidden * (n // _depthwise_groups(n, hidden)) * 9
        return positions * (trunk + hidden * (self.config.num_classes + 4))

    def macs(self, subnet: int, count_pruned: bool = True) -> int:
        """MACs of running stages ``0..subnet`` (every stage's head included), as the graphs count them.
        ``count_pruned`` is accepted for the construction's interface: this family prunes no weights."""
        total = sum(self.head_macs(k) for k in range(subnet + 1))
        for l, layer in enumerate(LAYOUT):
            inputs = np.sort(self._input_levels(layer))
            levels = self.levels(l).cpu().numpy()
            fan_in = np.searchsorted(inputs, levels[levels <= subnet], side="right").sum()
            total += int(fan_in) * self._positions(layer) * layer.kernel ** 2
        return total

    def weight_owners(self) -> list[tuple[nn.Parameter, Tensor]]:
        """Every parameter with the level owning each element: a layer's weights and BatchNorm
        belong to their output neuron's level, stage ``k``'s head to ``k``."""
        pairs: list[tuple[nn.Parameter, Tensor]] = []
        for l, layer in enumerate(LAYOUT):
            levels = self.levels(l)
            weight = self.convs[layer.name].weight
            pairs.append((weight, levels.view(-1, 1, 1, 1).expand_as(weight)))
            pairs += [(self.norms[layer.name].weight, levels), (self.norms[layer.name].bias, levels)]
        for k, head in enumerate(self.heads):
            pairs += [(p, torch.full_like(p, k, dtype=torch.long)) for p in head.parameters()]
        return pairs

    @staticmethod
    def is_class_parameter(name: str) -> bool:
        return name.startswith("heads.") and ".heatmap." in name

    # ---- computation ------------------------------------------------------------------------

    def _layer_input(self, layer: Layer, image: Tensor, carry: Carry, new: Carry, k: int) -> tuple[Tensor, Tensor]:
        """(input of ``layer`` at stage ``k``: its sources' neurons of level <= k, their columns)."""
        parts, cols, offset = [], [], 0
        for src in layer.inputs:
            if src == "image":
                parts.append(image)
                cols.append(torch.arange(3))
                offset += 3
                continue
            name, up = src.rstrip("^"), src.endswith("^")
            s = self._index[name]
            for j in range(k + 1):
                act = new.get(f"{name}.{j}", carry.get(f"{name}.{j}"))
                if act is None:
                    continue
                parts.append(F.interpolate(act, scale_factor=2.0, mode="nearest") if up else act)
                cols.append(self.groups(s)[j] + offset)
            offset += self.widths[s]
        return torch.cat(parts, 1), torch.cat(cols)

    def forward_stage(self, image: Tensor, carry: Carry, k: int, with_head: bool = True,
                      scales: dict[str, Tensor] | None = None) -> tuple[Carry, dict[str, Tensor]]:
        """Stage ``k``: the level-``k`` neurons of every layer, then stage ``k``'s head.

        ``scales``: optional importance scales ``r`` per layer (ones; their gradients are
        SteppingNet's importance signal)."""
        new: Carry = {}
        for l, layer in enumerate(LAYOUT):
            idx = self.groups(l)[k]
            if idx.numel() == 0:
                continue
            x, cols = self._layer_input(layer, image, carry, new, k)
            conv = self.convs[layer.name]
            h = F.conv2d(x, conv.weight[idx][:, cols], stride=layer.stride, padding=layer.padding)
            r = scales[layer.name][idx] if scales is not None else None
            new[f"{layer.name}.{k}"] = F.relu(batch_norm_channels(self.norms[layer.name], h, idx, r))
        if not with_head:
            return new, {}
        neck = [new.get(f"neck.{j}", carry.get(f"neck.{j}")) for j in range(k + 1)]
        return new, self.heads[k](torch.cat(neck, 1))

    def forward(self, image: Tensor, scales: dict[str, Tensor] | None = None) -> list[dict[str, Tensor]]:
        """Every stage's heads, in order (training: all stages in one pass)."""
        carry: Carry = {}
        outputs = []
        for k in range(self.num_stages):
            new, heads = self.forward_stage(image, carry, k, scales=scales)
            carry.update(new)
            outputs.append(heads)
        return outputs

    def any_width_levels(self, fractions: tuple[float, ...] = (0.2, 0.3, 0.5)) -> None:
        """The any-width nesting at the original width: the first ``fractions`` of every layer's
        original neurons per stage (as ``anywidth_centernet_patch_s3`` groups them), the expansion's
        extra neurons removed. With ``expansion`` 1 its MACs are the any-width detector's."""
        for l, layer in enumerate(LAYOUT[:-1]):
            width = self.config.layer_width(layer, expanded=False)
            groups = [max(1, round(width * f)) for f in fractions[:-1]]
            groups.append(width - sum(groups))
            levels = torch.full((self.widths[l],), self.num_subnets, dtype=torch.long)
            levels[:width] = torch.repeat_interleave(torch.arange(self.num_subnets), torch.tensor(groups))
            self.set_levels(l, levels)


def stepping_centernet_patch_s3(num_classes: int, input_size: int = 320, offset_range: int = 0,
                                expansion: float = PAPER_EXPANSION) -> SteppingCenterNet:
    """The shipped detector's layout widened by ``expansion``, every neuron in stage 0 (the start
    of SteppingNet's construction) except the pinned neck."""
    return SteppingCenterNet(SteppingCenterNetConfig(num_classes, input_size, expansion, offset_range=offset_range))
