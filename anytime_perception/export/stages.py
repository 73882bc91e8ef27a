"""Export an anytime detector to one ONNX graph per stage plus ``manifest.yaml``.

Stage ``k``'s graph reads the image and the carry of stages ``< k`` (named ``<layer>.<group>``) and
writes its own carry and its head; the runtime keeps the carry between calls, so nothing is
recomputed. A static single graph of the full model (``full.onnx``) is exported for benchmarks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch
import yaml
from torch import Tensor, nn

from ..nets.contract import AnytimeDetector
from ..runtime.manifest import APPEAL_OUTPUT as APPEAL
from .macs import count_macs

__all__ = ["export_stages", "verify_stages", "export_graph", "StageGraph", "graph_inputs", "stage_entry", "centernet_decoder",
           "write_manifest"]

HEADS = ("heatmap", "size", "offset")
OPSET = 17


# (model, image, carry, k) -> (new carry entries, the stage's other outputs in graph order)
StageStep = Callable[[nn.Module, Tensor, dict[str, Tensor], int], tuple[dict[str, Tensor], tuple[Tensor, ...]]]


class StageGraph(nn.Module):
    """Stage ``k`` of ``model`` as a module with flat named inputs/outputs for the ONNX exporter:
    inputs ``(image, *carry_in)``, outputs ``(*carry_out, *other outputs of step)``."""

    def __init__(self, model: nn.Module, step: StageStep, k: int, carry_in: list[str], carry_out: list[str]) -> None:
        super().__init__()
        self.model, self.step, self.k, self.carry_in, self.carry_out = model, step, k, carry_in, carry_out

    def forward(self, image: Tensor, *carry: Tensor) -> tuple[Tensor, ...]:
        new, outputs = self.step(self.model, image, dict(zip(self.carry_in, carry)), self.k)
        return tuple(new[n] for n in self.carry_out) + tuple(outputs)


def _detector_step(predictor: nn.Module | None) -> StageStep:
    """A detector stage's step; the predictor's stage also outputs AppealNet's q(x) (``appeal``)."""
    def step(model: nn.Module, image: Tensor, carry: dict[str, Tensor], k: int) -> tuple[dict, tuple]:
        new, heads = model.forward_stage(image, carry, k)
        outputs = tuple(heads[h] for h in HEADS)
        if predictor is not None and k == predictor.stage:
            outputs += (predictor({**carry, **new}, heads),)
        return new, outputs
    return step


class _Full(nn.Module):
    """The full model as one static graph: every group of every layer, only the last head."""

    def __init__(self, model: AnytimeDetector) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        carry: dict[str, Tensor] = {}
        last = self.model.num_stages - 1
        for k in range(last):
            carry.update(self.model.forward_stage(image, carry, k, with_head=False)[0])
        heads = self.model.forward_stage(image, carry, last)[1]
        return tuple(heads[h] for h in HEADS)


def export_graph(module: nn.Module, args: tuple[Tensor, ...], path: Path, inputs: list[str], outputs: list[str]) -> None:
    """Export ``module`` in eval mode to ``path``.

    The exporter restores the wrapper's mode afterwards; a fresh wrapper is in training mode, which
    would switch the wrapped model to training and let later forward passes update its BN
    statistics. Putting the wrapper in eval mode first keeps the model untouched.
    """
    module.eval()
    torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                      opset_version=OPSET, dynamo=False, do_constant_folding=True)


def graph_inputs(path: Path) -> list[str]:
    """Inputs the exported graph really reads (the exporter drops unused ones, e.g. the image
    when no level-``k`` neuron sits in the first layer)."""
    graph = onnx.load(str(path)).graph
    initializers = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


def stage_entry(file: Path, inputs: list[str], carry_outputs: list[str], head_outputs: dict[str, str]) -> dict:
    """The manifest entry of one exported graph; its MACs are counted from the graph itself."""
    return {"name": file.stem, "file": file.name, "macs": count_macs(file), "inputs": inputs,
            "carry_outputs": carry_outputs, "head_outputs": head_outputs}


def centernet_decoder(stride: int) -> dict:
    """The manifest's decoder section of a CenterNet detector with output stride ``stride``."""
    return {"type": "centernet", "stride": stride, "max_detections": 50, "nms_kernel": 3}


def write_manifest(out: Path, name: str, task: str, labels: tuple[str, ...], size: int, mean: tuple[float, ...],
                   std: tuple[float, ...], pad_value: int, decoder: dict, stages: list[dict], full: Path,
                   full_heads: list[str]) -> Path:
    """Write ``out/manifest.yaml`` for exported stages and the static full graph ``full``."""
    manifest = {
        "format_version": 1,
        "name": name,
        "task": task,
        "labels": list(labels),
        "input": {"size": size, "mean": [float(m) for m in mean], "std": [float(s) for s in std],
                  "pad_value": pad_value},
        "decoder": decoder,
        "stages": stages,
        "full_model": stage_entry(full, ["image"], [], {h: h for h in full_heads}),
    }
    path = out / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def export_stages(model: AnytimeDetector, out_dir: str | Path, name: str, labels: tuple[str, ...],
                  mean: tuple[float, ...], std: tuple[float, ...], predictor: nn.Module | None = None,
                  pad_value: int = 114) -> Path:
    """Write ``stage<k>.onnx``, ``full.onnx`` and ``manifest.yaml`` into ``out_dir``; with an
    AppealNet ``predictor`` (``nets.appeal_detector``) its stage also outputs q(x) as the
    ``appeal`` confidence (``python -m anytime_perception.calibration.appeal`` then writes the
    manifest's ``appeal`` section)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    if predictor is not None:  # traced as constants of the stage graph (it is no submodule of it)
        predictor = predictor.eval().requires_grad_(False)
    size = model.config.input_size
    image = torch.zeros(1, 3, size, size)
    stages, carry = [], {}
    with torch.no_grad():
        for k in range(model.num_stages):
            new, _ = model.forward_stage(image, carry, k)
            last = k == model.num_stages - 1
            carry_in, carry_out = list(carry), [] if last else list(new)
            file = out / f"stage{k}.onnx"
            appeals = predictor is not None and k == predictor.stage
            export_graph(StageGraph(model, _detector_step(predictor), k, carry_in, carry_out), (image, *carry.values()),
                         file, ["image", *carry_in], carry_out + list(HEADS) + ([APPEAL] if appeals else []))
            stages.append(stage_entry(file, ["image", *carry_in], carry_out, {h: h for h in HEADS}))
            if appeals:
                stages[-1]["confidence_outputs"] = {APPEAL: APPEAL}
            carry.update(new)
        full = out / "full.onnx"
        export_graph(_Full(model), (image,), full, ["image"], list(HEADS))
    return write_manifest(out, name, "detection", labels, size, mean, std, pad_value,
                          centernet_decoder(model.config.output_stride), stages, full, list(HEADS))


def verify_stages(expected: list[dict[str, Tensor]], out_dir: str | Path, image: Tensor) -> float:
    """Largest absolute difference between the ONNX Runtime stage outputs and ``expected``.

    Args:
        expected: the torch model's outputs of every stage, in stage order: every head, and any
            confidence output (by its rule name) that should be checked too.
        out_dir: the exported model directory.
        image: the input both were computed on.
    """
    manifest = yaml.safe_load((Path(out_dir) / "manifest.yaml").read_text())
    carry: dict[str, np.ndarray] = {}
    worst = 0.0
    for k, stage in enumerate(manifest["stages"]):
        session = ort.InferenceSession(str(Path(out_dir) / stage["file"]), providers=["CPUExecutionProvider"])
        feeds = {n: image.numpy() if n == "image" else carry[n] for n in stage["inputs"]}
        checked = {**stage["head_outputs"],
                   **{key: name for key, name in stage.get("confidence_outputs", {}).items() if key in expected[k]}}
        names = list(dict.fromkeys(stage["carry_outputs"] + list(checked.values())))
        values = dict(zip(names, session.run(names, feeds)))
        carry.update({n: values[n] for n in stage["carry_outputs"]})
        worst = max(worst, *(float(np.abs(values[name] - expected[k][key].numpy()).max()) for key, name in checked.items()))
    return worst
