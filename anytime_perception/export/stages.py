"""Export an anytime detector to one ONNX graph per stage plus ``manifest.yaml``.

Stage ``k``'s graph reads the image and the carry of stages ``< k`` (named ``<layer>.<group>``) and
writes its own carry and its head; the runtime keeps the carry between calls, so nothing is
recomputed. A static single graph of the full model (``full.onnx``) is exported for benchmarks;
a detector's is also a one-stage model of its own, ``static/manifest.yaml`` (``write_static_model``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from ..nets.contract import AnytimeDetector
from ..runtime.manifest import APPEAL_OUTPUT as APPEAL
from ..runtime.manifest import DecoderSpec, InputSpec, Manifest, ManifestError, StageSpec, load_manifest, save_manifest
from ..runtime.model import AnytimeModel
from .macs import count_macs

__all__ = ["export_stages", "verify_stages", "export_graph", "StageGraph", "StagePlan", "export_stage_graphs",
           "export_full", "graph_inputs", "stage_entry", "centernet_decoder", "SOFTMAX", "write_manifest",
           "write_static_model", "STATIC_DIR"]

HEADS = ("heatmap", "size", "offset")
OPSET = 17
STATIC_DIR = "static"  # <model dir>/static: the full graph as a one-stage model


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


def stage_entry(file: Path, inputs: list[str], carry_outputs: list[str], head_outputs: dict[str, str],
                confidence_outputs: dict[str, str] | None = None) -> StageSpec:
    """The manifest entry of one exported graph; its MACs are counted from the graph itself."""
    return StageSpec(file.stem, file, count_macs(file), tuple(inputs), tuple(carry_outputs), dict(head_outputs),
                     dict(confidence_outputs or {}))


def centernet_decoder(stride: int, offset_range: int = 0) -> DecoderSpec:
    """The decoder of a CenterNet detector with output stride ``stride`` (``offset_range``: its
    offset head spans (-r, r + 1) cells)."""
    return DecoderSpec("centernet", stride, max_detections=50, nms_kernel=3, offset_range=offset_range)


SOFTMAX = DecoderSpec("softmax")


@dataclass(frozen=True)
class StagePlan:
    """What stage ``k``'s graph reads and writes, as the manifest declares it.

    Args:
        carry_in: carry entries the graph reads besides the image.
        carry_out: carry entries the runtime keeps for later stages.
        outputs: names of the step's other outputs, in the order it returns them (a name may also
            be in ``carry_out``: a cumulative output that the next stage adds to).
        heads: decoder key -> graph output.
        confidences: exit rule -> graph output.
    """

    carry_in: list[str]
    carry_out: list[str]
    outputs: list[str]
    heads: dict[str, str]
    confidences: dict[str, str] = field(default_factory=dict)


# (k, names of the carry so far, names stage k adds) -> its plan
Planner = Callable[[int, list[str], list[str]], StagePlan]


def export_stage_graphs(model: nn.Module, step: StageStep, num_stages: int, image: Tensor, out: Path,
                        plan: Planner) -> list[StageSpec]:
    """The one export loop of every family: ``stage<k>.onnx`` for each stage, its manifest entry
    with the MACs counted from the graph and the inputs the graph really reads.

    Args:
        model: the network, in eval mode.
        step: runs stage ``k`` on the image and the carry so far (``StageStep``).
        num_stages: how many stages.
        image: an example input [1, 3, S, S].
        out: the model directory.
        plan: names the graph's inputs and outputs (``Planner``).
    """
    stages, carry = [], {}
    with torch.no_grad():
        for k in range(num_stages):
            new, _ = step(model, image, carry, k)
            p = plan(k, list(carry), list(new))
            graph_carry = [n for n in p.carry_out if n not in p.outputs]  # the others leave as outputs
            file = out / f"stage{k}.onnx"
            export_graph(StageGraph(model, step, k, p.carry_in, graph_carry), (image, *(carry[n] for n in p.carry_in)),
                         file, ["image", *p.carry_in], graph_carry + p.outputs)
            stages.append(stage_entry(file, graph_inputs(file), p.carry_out, p.heads, p.confidences))
            carry.update(new)
    return stages


def export_full(module: nn.Module, image: Tensor, out: Path, heads: list[str]) -> StageSpec:
    """``full.onnx``: the static single graph (the benchmarks' baseline), outputs ``heads``."""
    file = out / "full.onnx"
    with torch.no_grad():
        export_graph(module, (image,), file, ["image"], heads)
    return stage_entry(file, ["image"], [], {h: h for h in heads})


def write_manifest(out: Path, name: str, task: str, labels: tuple[str, ...], input_spec: InputSpec,
                   decoder: DecoderSpec, stages: list[StageSpec], full: StageSpec | None) -> Path:
    """Write ``out/manifest.yaml`` through the runtime's own dataclasses (checked by loading it);
    a staged detector with a full graph also gets ``out/static/manifest.yaml``
    (``write_static_model``)."""
    path = save_manifest(Manifest(name, task, tuple(labels), input_spec, decoder, tuple(stages), full_model=full,
                                  root=Path(out)))
    if task == "detection" and full is not None and len(stages) > 1:
        write_static_model(out)
    return path


def write_static_model(model_dir: str | Path) -> Path:
    """Write ``<model_dir>/static/manifest.yaml``: the model's full graph as a one-stage model (a
    static detector for comparisons: same labels, input and decoder, the full graph's MACs, no
    gates, no appeals). Its stage refers to ``../full.onnx``: the graph is not copied.

    Returns the path written; ``ManifestError`` if the model has no full graph.
    """
    manifest = load_manifest(model_dir)
    full = manifest.full_model
    if full is None:
        raise ManifestError(f"{model_dir}: the manifest has no full_model to make a static model of")
    if len(manifest.stages) == 1:
        raise ManifestError(f"{model_dir}: a one-stage model is static already")
    root = manifest.root / STATIC_DIR
    root.mkdir(exist_ok=True)
    stage = StageSpec(full.name, full.file, full.macs, full.inputs, (), dict(full.head_outputs),
                      image_input=full.image_input)
    return save_manifest(Manifest(f"{manifest.name}_static", manifest.task, manifest.labels, manifest.input,
                                  manifest.decoder, (stage,), full_model=stage, root=root))


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

    def plan(k: int, available: list[str], new: list[str]) -> StagePlan:
        appeals = predictor is not None and k == predictor.stage
        last = k == model.num_stages - 1
        return StagePlan(available, [] if last else new, list(HEADS) + ([APPEAL] if appeals else []),
                         {h: h for h in HEADS}, {APPEAL: APPEAL} if appeals else {})

    stages = export_stage_graphs(model, _detector_step(predictor), model.num_stages, image, out, plan)
    full = export_full(_Full(model), image, out, list(HEADS))
    return write_manifest(out, name, "detection", labels, InputSpec(size, tuple(mean), tuple(std), pad_value),
                          centernet_decoder(model.config.output_stride, getattr(model.config, "offset_range", 0)), stages, full)


def verify_stages(expected: list[dict[str, Tensor]], out_dir: str | Path, image: Tensor) -> float:
    """Largest absolute difference between the exported stages, run by the runtime as the node
    runs them, and ``expected``.

    Args:
        expected: the torch model's outputs of every stage, in stage order: every head, and any
            confidence output (by its rule name) that should be checked too.
        out_dir: the exported model directory.
        image: the input both were computed on.
    """
    worst = 0.0
    for step, wanted in zip(AnytimeModel(out_dir).stages(image.numpy()), expected):
        for key, value in wanted.items():
            got = step.heads[key] if key in step.heads else step.confidences[key]
            worst = max(worst, float(np.abs(np.asarray(got) - value.numpy()).max()))
    return worst
