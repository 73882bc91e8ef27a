"""Export a SteppingNet classifier as one ONNX graph per subnet increment, plus ``manifest.yaml``.

Stage ``k``'s graph computes only the neurons of level ``k`` of every layer, reading the cached
activations of levels ``< k`` (carry ``h<layer>.<level>``), and adds their share to the logits of
subnet ``k - 1`` (carry ``logits.<k-1>``). The MACs counted from each graph therefore equal the
subnet's incremental MACs, and their sum the largest subnet's MACs: nothing is recomputed.
"""
from __future__ import annotations

from pathlib import Path

import onnx
import torch
import yaml
from torch import Tensor, nn

from ..nets.stepping import SteppingClassifier
from .macs import count_macs
from .stages import export_graph

__all__ = ["export_stepping"]


class _Increment(nn.Module):
    """Increment ``k`` with flat named inputs/outputs for the ONNX exporter."""

    def __init__(self, model: SteppingClassifier, k: int, carry_in: list[str], carry_out: list[str]) -> None:
        super().__init__()
        self.model, self.k, self.carry_in, self.carry_out = model, k, carry_in, carry_out

    def forward(self, image: Tensor, *carry: Tensor) -> tuple[Tensor, ...]:
        new, logits = self.model.forward_increment(image, dict(zip(self.carry_in, carry)), self.k)
        return tuple(new[n] for n in self.carry_out) + (logits,)


class _Largest(nn.Module):
    """The largest subnet as one static graph (benchmark baseline)."""

    def __init__(self, model: SteppingClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        return self.model(image)


def _needed(model: SteppingClassifier, k: int, available: list[str]) -> list[str]:
    """Carry entries increment ``k`` reads: every layer's lower levels except the last hidden
    layer's (the output only adds the new neurons), and the previous logits."""
    last = model.num_hidden - 1
    return [n for n in available if not n.startswith(f"h{last}.") and (not n.startswith("logits.")
                                                                      or n == f"logits.{k - 1}")]


def _graph_inputs(path: Path) -> list[str]:
    """Inputs the exported graph really reads (the exporter drops unused ones, e.g. the image
    when no level-``k`` neuron sits in the first layer)."""
    graph = onnx.load(str(path)).graph
    initializers = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


def export_stepping(model: SteppingClassifier, out_dir: str | Path, name: str, labels: tuple[str, ...],
                    mean: tuple[float, ...], std: tuple[float, ...]) -> Path:
    """Write ``stage<k>.onnx`` per increment, ``full.onnx`` and ``manifest.yaml`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    size = model.spec.input_size
    image = torch.zeros(1, 3, size, size)
    stages, carry = [], {}
    with torch.no_grad():
        for k in range(model.num_subnets):
            carry_in = _needed(model, k, list(carry))
            new, _ = model.forward_increment(image, {n: carry[n] for n in carry_in}, k)
            logits = f"logits.{k}"
            last = k == model.num_subnets - 1
            carry_out = [] if last else _needed(model, k + 1, list(new))  # ends with the logits
            kept = [n for n in carry_out if n != logits]
            file = out / f"stage{k}.onnx"
            export_graph(_Increment(model, k, carry_in, kept), (image, *(carry[n] for n in carry_in)), file,
                         ["image", *carry_in], kept + [logits])
            stages.append({"name": f"stage{k}", "file": file.name, "macs": count_macs(file),
                           "inputs": _graph_inputs(file), "carry_outputs": carry_out,
                           "head_outputs": {"logits": logits}})
            carry.update(new)
        full = out / "full.onnx"
        export_graph(_Largest(model), (image,), full, ["image"], ["logits"])
    manifest = {
        "format_version": 1,
        "name": name,
        "task": "classification",
        "labels": list(labels),
        "input": {"size": size, "mean": [float(m) for m in mean], "std": [float(s) for s in std], "pad_value": 0},
        "decoder": {"type": "softmax"},
        "stages": stages,
        "gates": {},
        "full_model": {"name": "full", "file": full.name, "macs": count_macs(full), "inputs": ["image"],
                       "head_outputs": {"logits": "logits"}},
    }
    path = out / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path
