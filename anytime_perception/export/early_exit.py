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
from .stages import StageGraph, export_graph, graph_inputs, stage_entry, write_manifest

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
    stages, carry = [], {}
    with torch.no_grad():
        for k in range(net.num_exits):
            last = k == net.num_exits - 1
            carry_in = [] if k == 0 else [f"features.{k - 1}"]
            carry_out = [] if last else [f"features.{k}"]
            outputs = carry_out + [f"logits.{k}"] + ([] if last else [f"{rule}.{k}"])
            file = out / f"stage{k}.onnx"
            export_graph(StageGraph(net, _exit_step, k, carry_in, carry_out), (image, *(carry[n] for n in carry_in)),
                         file, ["image", *carry_in], outputs)
            entry = stage_entry(file, graph_inputs(file), carry_out, {"logits": f"logits.{k}"})
            if not last:
                entry["confidence_outputs"] = {rule: f"{rule}.{k}"}
            stages.append(entry)
            carry.update(_exit_step(net, image, carry, k)[0])
        full = out / "full.onnx"
        export_graph(net.backbone, (image,), full, ["image"], ["logits"])
    return write_manifest(out, name, "classification", labels, input_size, mean, std, 0, {"type": "softmax"},
                          stages, full, ["logits"])
