"""Any-width anytime detector: nested channel groups, one CenterNet head per stage.

Stage ``k`` computes channel group ``k`` of every layer from the cached groups ``< k`` (carry) and
then the head of subnet ``k`` on groups ``0..k`` of the neck. Running the stages in order is the
whole model; stopping after stage ``k`` gives subnet ``k``. The same ``forward_stage`` serves
training (all stages in one pass) and export (one ONNX graph per stage).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .layers import NestedConvBNReLU, StageHead, check_detector_size

__all__ = ["AnyWidthConfig", "AnyWidthDetector", "anywidth_centernet_s3", "anywidth_centernet_patch_s3"]

Carry = dict[str, Tensor]


@dataclass(frozen=True)
class AnyWidthConfig:
    """Widths of the detector; ``group_fractions`` split every layer into stages."""

    num_classes: int
    input_size: int = 320
    group_fractions: tuple[float, ...] = (0.25, 0.25, 0.5)
    widths: dict[str, int] = field(
        default_factory=lambda: {"stem": 16, "c2": 32, "c3": 64, "c4": 128, "c5": 128, "neck": 64}
    )
    head_hidden: int = 48
    output_stride: int = 8
    patch_stem: bool = False  # 4x4 stride-4 patchify stem instead of 3x3 stride 2 + stride-2 conv
    # box regression also at cells up to this many cells from a box's centre cell: the offset head
    # then spans (-r, r + 1) cells (the decoder's ``offset_range``); 0: centre cell only, offset (0, 1)
    offset_range: int = 0

    # the deepest layer's stride: the top-down neck needs input sizes that it divides
    max_stride = 32

    def __post_init__(self) -> None:
        check_detector_size(self.num_classes, self.input_size, self.max_stride)


def _split(width: int, fractions: tuple[float, ...]) -> list[int]:
    groups = [max(1, round(width * f)) for f in fractions[:-1]]
    return groups + [width - sum(groups)]


class AnyWidthDetector(nn.Module):
    """Backbone (strides 2..32) + top-down neck to stride 8, all layers nested."""

    def __init__(self, config: AnyWidthConfig) -> None:
        super().__init__()
        self.config = config
        g = {name: _split(w, config.group_fractions) for name, w in config.widths.items()}
        self.groups = g
        self.layers = nn.ModuleDict(
            {
                "stem": (NestedConvBNReLU([3], g["stem"], 4, 4, padding=0, shared_input=True)  # /4
                         if config.patch_stem else NestedConvBNReLU([3], g["stem"], 3, 2, shared_input=True)),  # /2
                "c2a": NestedConvBNReLU(g["stem"], g["c2"], 3, 1 if config.patch_stem else 2),  # /4
                "c2b": NestedConvBNReLU(g["c2"], g["c2"]),
                "c3a": NestedConvBNReLU(g["c2"], g["c3"], 3, 2),  # /8
                "c3b": NestedConvBNReLU(g["c3"], g["c3"]),
                "c4a": NestedConvBNReLU(g["c3"], g["c4"], 3, 2),  # /16
                "c4b": NestedConvBNReLU(g["c4"], g["c4"]),
                "c5a": NestedConvBNReLU(g["c4"], g["c5"], 3, 2),  # /32
                "c5b": NestedConvBNReLU(g["c5"], g["c5"]),
                # top-down: each group reads [upsampled deeper group, lateral group]
                "p4": NestedConvBNReLU(_pairwise(g["c5"], g["c4"]), g["c4"], 1),
                "p3": NestedConvBNReLU(_pairwise(g["c4"], g["c3"]), g["neck"], 1),
                "neck": NestedConvBNReLU(g["neck"], g["neck"]),
            }
        )
        self.heads = nn.ModuleList(
            StageHead(sum(g["neck"][: k + 1]), config.num_classes, config.head_hidden)
            for k in range(self.num_stages)
        )

    @property
    def num_stages(self) -> int:
        return len(self.config.group_fractions)

    def forward_stage(self, image: Tensor, carry: Carry, k: int,
                      with_head: bool = True) -> tuple[Carry, dict[str, Tensor]]:
        """Run stage ``k``.

        Args:
            image: [N, 3, S, S] normalised input.
            carry: ``"<layer>.<group>"`` -> activation, for every layer and group ``< k``.
            k: stage index.
            with_head: also run the head of subnet ``k`` (else the heads dict is empty).

        Returns:
            The new carry entries (group ``k`` of every layer) and the head outputs of subnet k.
        """
        new: Carry = {}

        def nested(name: str, inputs: list[Tensor]) -> list[Tensor]:
            out = self.layers[name].forward_group(inputs, k)
            new[f"{name}.{k}"] = out
            return [carry[f"{name}.{j}"] for j in range(k)] + [out]

        def up_cat(deep: list[Tensor], lateral: list[Tensor]) -> list[Tensor]:
            # per group: [upsample(deep_j), lateral_j]; nearest upsampling costs no MACs
            return [torch.cat([F.interpolate(d, scale_factor=2.0, mode="nearest"), l], 1)
                    for d, l in zip(deep, lateral)]

        x = nested("stem", [image])
        x = nested("c2b", nested("c2a", x))
        c3 = nested("c3b", nested("c3a", x))
        c4 = nested("c4b", nested("c4a", c3))
        c5 = nested("c5b", nested("c5a", c4))
        p4 = nested("p4", up_cat(c5, c4))
        p3 = nested("neck", nested("p3", up_cat(p4, c3)))
        return new, self.heads[k](torch.cat(p3, 1)) if with_head else {}

    @staticmethod
    def is_class_parameter(name: str) -> bool:
        """Whether a state-dict entry's shape depends on the class count (the heatmap outputs):
        what fine-tuning on other classes re-initialises."""
        return name.startswith("heads.") and ".heatmap." in name

    def forward(self, image: Tensor) -> list[dict[str, Tensor]]:
        """All stages in order; returns the head outputs of every subnet."""
        carry: Carry = {}
        outputs = []
        for k in range(self.num_stages):
            new, heads = self.forward_stage(image, carry, k)
            carry.update(new)
            outputs.append(heads)
        return outputs


def _pairwise(deep: list[int], lateral: list[int]) -> list[int]:
    return [d + l for d, l in zip(deep, lateral)]


def anywidth_centernet_s3(num_classes: int, input_size: int = 320, offset_range: int = 0) -> AnyWidthDetector:
    """Three-stage any-width CenterNet (stage widths 1/4, 1/2, 1 of every layer)."""
    return AnyWidthDetector(AnyWidthConfig(num_classes=num_classes, input_size=input_size, offset_range=offset_range))


def anywidth_centernet_patch_s3(num_classes: int, input_size: int = 320, offset_range: int = 0) -> AnyWidthDetector:
    """Three stages with a patchify stem, 1.25x widths and stage widths 1/5, 1/2, 1 of every layer.

    Stage 0 keeps the width of ``anywidth_centernet_s3``'s stage 0 while the later stages grow,
    so the preliminary answer costs a smaller share of the full model.
    """
    return AnyWidthDetector(AnyWidthConfig(
        num_classes=num_classes, input_size=input_size, group_fractions=(0.2, 0.3, 0.5), patch_stem=True,
        widths={"stem": 20, "c2": 40, "c3": 80, "c4": 160, "c5": 160, "neck": 80}, offset_range=offset_range))
