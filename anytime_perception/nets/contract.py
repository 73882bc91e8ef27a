"""What a detector family implements to be trained by ``anytime_train``, exported stage by stage
and run by the node. A new family is one ``nets/`` file whose builder returns such a module,
registered in ``nets.MODELS``; ``anytime_train --model NAME`` then trains it.

Stage ``k`` computes only what is new in subnet ``k`` from the image and the carry of stages
``< k`` (named tensors); the export turns each stage into one ONNX graph with exactly those inputs
and outputs, so the runtime never recomputes anything.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["AnytimeDetector", "DetectorConfig"]


class DetectorConfig(Protocol):
    num_classes: int
    input_size: int  # square input in pixels, a multiple of the network's largest stride
    output_stride: int  # of the CenterNet heads (the manifest's decoder stride)


@runtime_checkable
class AnytimeDetector(Protocol):
    """The contract (``AnyWidthDetector`` is the reference implementation)."""

    config: DetectorConfig

    @property
    def num_stages(self) -> int: ...

    def forward_stage(self, image: Tensor, carry: dict[str, Tensor], k: int,
                      with_head: bool = True) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """New carry entries of stage ``k`` and its heads: ``heatmap`` [N, C, H, W] logits,
        ``size`` [N, 2, H, W] log box size in output cells, ``offset`` [N, 2, H, W] logits."""
        ...

    def forward(self, image: Tensor) -> list[dict[str, Tensor]]:
        """Every stage's heads, in order (training: all stages in one pass)."""
        ...

    @staticmethod
    def is_class_parameter(name: str) -> bool:
        """Whether a state-dict entry depends on the class count (re-initialised per class when
        fine-tuning on other classes)."""
        ...
