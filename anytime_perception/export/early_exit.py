"""Export an early-exit network (PTEEnet branches or decision gates) as one ONNX graph per exit.

Stage ``k`` runs the backbone units between exit ``k - 1`` and exit ``k`` on the carried feature
map (``features.<k-1>``; the image for stage 0), then exit ``k``'s head: logits and the head's own
confidence (``confidence``: the sigmoid confidence head of a branch; ``distance``: a decision
gate's largest distance to a class boundary). The last stage is the rest of the backbone and its
own classifier. ``full.onnx`` is the backbone alone, the static baseline.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..nets.early_exit import EarlyExitNet
from ..runtime.manifest import InputSpec
from .stages import SOFTMAX, StagePlan, export_full, export_stage_graphs, write_manifest

__all__ = ["export_early_exit", "confidence_name"]


def confidence_name(net: EarlyExitNet) -> str:
    """The exit rule of the heads' own confidence output."""
    return "confidence" if net.kind == "branch" else "distance"


def _exit_step(net: nn.Module, image: Tensor, carry: dict[str, Tensor], k: int) -> tuple[dict, tuple]:
    features, logits, confidence = net.stage(k, image if k == 0 else carry[f"features.{k - 1}"])
    last = k == net.num_exits - 1
    return ({} if last else {f"features.{k}": features}), ((logits,) if last else (logits, confidence))


def export_early_exit(net: EarlyExitNet, out_dir: str | Path, name: str, labels: tuple[str, ...],
                      mean: tuple[float, ...], std: tuple[float, ...], input_size: int) -> Path:
    """Write ``stage<k>.onnx`` per exit, ``full.onnx`` and ``manifest.yaml`` into ``out_dir``
    (``mean``/``std`` in pixel units, 0..255)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    image = torch.zeros(1, 3, input_size, input_size)
    rule = confidence_name(net)

    def plan(k: int, available: list[str], new: list[str]) -> StagePlan:
        last = k == net.num_exits - 1
        return StagePlan([] if k == 0 else [f"features.{k - 1}"], new, [f"logits.{k}"] + ([] if last else [f"{rule}.{k}"]),
                         {"logits": f"logits.{k}"}, {} if last else {rule: f"{rule}.{k}"})

    stages = export_stage_graphs(net, _exit_step, net.num_exits, image, out, plan)
    full = export_full(net.backbone, image, out, ["logits"])
    return write_manifest(out, name, "classification", labels, InputSpec(input_size, tuple(mean), tuple(std), 0),
                          SOFTMAX, stages, full)
