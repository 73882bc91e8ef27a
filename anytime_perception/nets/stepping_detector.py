"""SteppingNet CenterNet detectors whose 1x1-conv output is the CenterNet head.

The output layer's channels are the heads (class heatmaps, then 2 log sizes, then 2 offsets) at
stride 8; like a stepping classifier's logits they are additive over increments, so stage ``k``
adds the contribution of the level-``k`` neurons to the heads of stage ``k - 1``.

- ``CENTERNET_CHAIN``: a plain chain that widens the receptive field with dilated 3x3
  convolutions at stride 8.
- ``CENTERNET_NECK``: the any-width detector's layout (patch stem, backbone to stride 32, top-down
  neck back to stride 8 through lateral inputs, a 3x3 head layer), every layer stepping.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .stepping import SteppingSpec, ConvSpec, SteppingNet

__all__ = ["CENTERNET_CHAIN", "CENTERNET_NECK", "OUTPUT_STRIDE", "split_heads", "stepping_centernet"]

OUTPUT_STRIDE = 8
CENTERNET_CHAIN = SteppingSpec(
    "stepping_centernet",
    convs=(
        ConvSpec(24, 4, 0, pool=False, stride=4),  # patchify stem, /4
        ConvSpec(48, 3, 1, pool=False),
        ConvSpec(96, 3, 1, pool=False, stride=2),  # /8
        ConvSpec(96, 3, 2, pool=False, dilation=2),
        ConvSpec(96, 3, 4, pool=False, dilation=4),
        ConvSpec(64, 3, 8, pool=False, dilation=8),
    ),
    num_classes=4 + 4,
    input_size=320,
    head="conv",
)
CENTERNET_NECK = SteppingSpec(
    "stepping_centernet_neck",
    convs=(
        ConvSpec(16, 4, 0, pool=False, stride=4),  # 0 stem, /4
        ConvSpec(32, 3, 1, pool=False),  # 1 c2a
        ConvSpec(32, 3, 1, pool=False),  # 2 c2b
        ConvSpec(64, 3, 1, pool=False, stride=2),  # 3 c3a, /8
        ConvSpec(64, 3, 1, pool=False),  # 4 c3b
        ConvSpec(128, 3, 1, pool=False, stride=2),  # 5 c4a, /16
        ConvSpec(128, 3, 1, pool=False),  # 6 c4b
        ConvSpec(128, 3, 1, pool=False, stride=2),  # 7 c5a, /32
        ConvSpec(128, 3, 1, pool=False),  # 8 c5b
        ConvSpec(128, 1, 0, pool=False, lateral=6),  # 9 p4: [c5b up, c4b], /16
        ConvSpec(64, 1, 0, pool=False, lateral=4),  # 10 p3: [p4 up, c3b], /8
        ConvSpec(64, 3, 1, pool=False),  # 11 neck
        ConvSpec(48, 3, 1, pool=False),  # 12 head
    ),
    num_classes=4 + 4,
    input_size=320,
    head="conv",
)


def split_heads(output: Tensor, num_classes: int) -> dict[str, Tensor]:
    """The output channels as CenterNet heads: ``heatmap``, ``size`` and ``offset``."""
    return {"heatmap": output[:, :num_classes], "size": output[:, num_classes: num_classes + 2],
            "offset": output[:, num_classes + 2: num_classes + 4]}


def stepping_centernet(num_classes: int, num_subnets: int = 1, expansion: float = 1.0,
                       spec: SteppingSpec = CENTERNET_CHAIN) -> SteppingNet:
    """The detector chain (expanded by ``expansion``) with ``num_subnets`` levels and a prior of
    0.1 on the heatmap (CenterNet's focal-loss initialisation)."""
    spec = spec.with_classes(num_classes + 4)
    model = SteppingNet(spec.expanded(expansion) if expansion != 1.0 else spec, num_subnets)
    with torch.no_grad():
        model.out.bias.zero_()
        model.out.bias[:num_classes] = -2.19
    return model
