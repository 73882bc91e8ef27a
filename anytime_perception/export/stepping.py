"""Export a SteppingNet as one ONNX graph per subnet increment, plus ``manifest.yaml``.

Stage ``k``'s graph computes only the neurons of level ``k`` of every layer, reading the cached
activations of levels ``< k`` (carry ``h<layer>.<level>``), and adds their share to the output of
subnet ``k - 1`` (carry ``logits.<k-1>``). The MACs counted from each graph therefore equal the
subnet's incremental MACs, and their sum the largest subnet's MACs: nothing is recomputed.
A classifier's head is its logits; a detector's output channels are split into CenterNet heads.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..nets.stepping import SteppingNet
from ..runtime.manifest import InputSpec
from .stages import SOFTMAX, StagePlan, centernet_decoder, export_full, export_stage_graphs, write_manifest

__all__ = ["export_stepping", "head_outputs"]


def _heads(model: SteppingNet) -> dict[str, slice]:
    """Head name -> output channels: the logits, or a detector's CenterNet heads."""
    if model.spec.head == "linear":
        return {"logits": slice(None)}
    c = model.spec.num_classes - 4
    return {"heatmap": slice(0, c), "size": slice(c, c + 2), "offset": slice(c + 2, c + 4)}


def head_outputs(model: SteppingNet, output: Tensor) -> dict[str, Tensor]:
    """A subnet's output as the manifest's heads (to compare the ONNX stages with torch)."""
    return {name: output[:, s] for name, s in _heads(model).items()}


def _increment_step(model: nn.Module, image: Tensor, carry: dict[str, Tensor], k: int) -> tuple[dict, tuple]:
    """Increment ``k``: new carry, then the cumulative output and (detectors) its split heads."""
    new, out = model.forward_increment(image, carry, k)
    heads = _heads(model)
    return new, (out,) + (() if "logits" in heads else tuple(out[:, s] for s in heads.values()))


class _Largest(nn.Module):
    """The largest subnet as one static graph (benchmark baseline)."""

    def __init__(self, model: SteppingNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        out = self.model(image)
        return tuple(out[:, s] for s in _heads(self.model).values())


def _needed(model: SteppingNet, k: int, available: list[str]) -> list[str]:
    """Carry entries increment ``k`` reads: every layer's lower levels except the last hidden
    layer's (the output only adds the new neurons), and the previous logits."""
    last = model.num_hidden - 1
    return [n for n in available if not n.startswith(f"h{last}.") and (not n.startswith("logits.")
                                                                      or n == f"logits.{k - 1}")]


def export_stepping(model: SteppingNet, out_dir: str | Path, name: str, labels: tuple[str, ...],
                    mean: tuple[float, ...], std: tuple[float, ...]) -> Path:
    """Write ``stage<k>.onnx`` per increment, ``full.onnx`` and ``manifest.yaml`` into ``out_dir``.

    ``mean``/``std`` are in pixel units (0..255), as the runtime normalises. A linear-head model is
    exported as a classifier (softmax decoder), a conv-head one as a CenterNet detector at stride
    ``input_size / output size``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    size = model.spec.input_size
    image = torch.zeros(1, 3, size, size)
    head_names = list(_heads(model))

    def plan(k: int, available: list[str], new: list[str]) -> StagePlan:
        logits = f"logits.{k}"
        last = k == model.num_subnets - 1
        heads = {h: logits if h == "logits" else f"{h}.{k}" for h in head_names}
        # the cumulative logits are an output and (but for the last) carried to the next increment
        return StagePlan(_needed(model, k, available), [] if last else _needed(model, k + 1, new),
                         [logits] + [n for n in heads.values() if n != logits], heads)

    stages = export_stage_graphs(model, _increment_step, model.num_subnets, image, out, plan)
    full = export_full(_Largest(model), image, out, head_names)
    if model.spec.head == "conv":
        stride = size // round(model.final_hw ** 0.5)
        return write_manifest(out, name, "detection", labels, InputSpec(size, tuple(mean), tuple(std), 114),
                              centernet_decoder(stride), stages, full)
    return write_manifest(out, name, "classification", labels, InputSpec(size, tuple(mean), tuple(std), 0), SOFTMAX,
                          stages, full)
