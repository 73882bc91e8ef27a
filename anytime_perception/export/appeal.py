"""Export the networks of a big/little pair, each as a 1-stage classification model.

- The little AppealNet: one graph with outputs ``logits`` (the approximator) and ``q`` (the
  predictor), declared as ``confidence_outputs: {appeal: q}``: the runtime reads q(x) as the
  stage's confidence (high: keep the little answer, low: appeal to the big network).
- The big network (a CIFAR ResNet), or a little network trained alone: one graph with ``logits``.

The one stage is the whole model, so it is also the manifest's ``full_model``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..nets.appeal import AppealNet
from ..runtime.manifest import InputSpec
from .stages import SOFTMAX, export_graph, graph_inputs, stage_entry, write_manifest

__all__ = ["AppealOutputs", "export_single_stage"]


class AppealOutputs(nn.Module):
    """AppealNet with the flat outputs of its graph: ``(logits, q)``."""

    def __init__(self, net: AppealNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(image)
        return out["logits"], out["q"]  # [N, classes], [N]


def export_single_stage(model: nn.Module, out_dir: str | Path, name: str, labels: tuple[str, ...],
                        mean: tuple[float, ...], std: tuple[float, ...], input_size: int,
                        confidence: str | None = None) -> Path:
    """Write ``stage0.onnx`` and ``manifest.yaml`` of a 1-stage classification model.

    Args:
        model: returns the logits, or ``(logits, confidence)`` when ``confidence`` is given.
        out_dir: the model directory.
        name: model name in the manifest.
        labels: class names.
        mean, std: input normalisation in pixel units (0..255).
        input_size: square input side.
        confidence: the rule name under which the second output is declared (e.g. ``appeal``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    file = out / "stage0.onnx"
    outputs = ["logits"] + (["q"] if confidence else [])
    with torch.no_grad():
        export_graph(model, (torch.zeros(1, 3, input_size, input_size),), file, ["image"], outputs)
    entry = stage_entry(file, graph_inputs(file), [], {"logits": "logits"}, {confidence: "q"} if confidence else {})
    full = stage_entry(file, ["image"], [], {"logits": "logits"})
    return write_manifest(out, name, "classification", labels, InputSpec(input_size, tuple(mean), tuple(std), 0),
                          SOFTMAX, [entry], full)
