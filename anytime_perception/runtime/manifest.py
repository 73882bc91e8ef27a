"""The manifest: the contract between export and runtime (``models/<name>/manifest.yaml``).

Validated on load; a bad manifest is refused with a ``ManifestError`` naming the field.

``load_manifest`` also takes an ultralytics YOLO detection export (a ``.onnx`` file): it describes
it as a one-stage model (``yolo_manifest``) from the graph's input shape, its output shape and the
class names in its metadata.
"""
from __future__ import annotations

import ast
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .exit_rules import DERIVED_RULES, DETECTION_FEATURES, LinearPolicy

__all__ = ["APPEAL_OUTPUT", "ManifestError", "InputSpec", "DecoderSpec", "StageSpec", "AppealSpec", "Manifest", "load_manifest",
           "save_manifest", "yolo_manifest", "check_yolo_output"]

FORMAT_VERSION = 1
IMAGE_INPUT = "image"
APPEAL_OUTPUT = "appeal"  # the confidence output that exporters give AppealNet's predictor q(x)
# the decoders of each task, and what a stage must output for each decoder
DECODERS = {"detection": ("centernet", "yolo"), "classification": ("softmax",)}
HEAD_KEYS = {"centernet": ("heatmap", "size", "offset"), "yolo": ("predictions",), "softmax": ("logits",)}
YOLO_HEAD = "predictions"  # [1, 4 + C, N]: cx, cy, w, h in input pixels, then C class scores


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the offending field."""


@dataclass(frozen=True)
class InputSpec:
    """Input geometry and normalisation: letterbox to ``size`` then (x - mean) / std, NCHW."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pad_value: int = 114

    def to_dict(self) -> dict:
        return {"size": int(self.size), "mean": [float(m) for m in self.mean], "std": [float(s) for s in self.std],
                "pad_value": int(self.pad_value)}


@dataclass(frozen=True)
class DecoderSpec:
    """How head outputs become results: ``centernet`` (heatmap peaks + size + offset -> boxes),
    ``yolo`` (an ultralytics detection head's boxes and class scores, class-wise NMS at IoU
    ``nms_iou``) or ``softmax`` (logits -> class probabilities)."""

    type: str
    stride: int = 1
    max_detections: int = 50
    nms_kernel: int = 3
    nms_iou: float = 0.7
    offset_range: int = 0  # centernet: the offset head spans (-r, r + 1) cells (0: its centre cell only)

    def to_dict(self) -> dict:
        if self.type == "yolo":
            return {"type": self.type, "max_detections": int(self.max_detections), "nms_iou": float(self.nms_iou)}
        if self.type != "centernet":
            return {"type": self.type}
        spec = {"type": self.type, "stride": int(self.stride), "max_detections": int(self.max_detections),
                "nms_kernel": int(self.nms_kernel)}
        return spec | ({"offset_range": int(self.offset_range)} if self.offset_range else {})


YOLO_DECODER = DecoderSpec("yolo", max_detections=300, nms_iou=0.7)  # ultralytics' defaults


@dataclass(frozen=True)
class StageSpec:
    """One stage graph: what it reads, what it carries forward, what its head writes."""

    name: str
    file: Path
    macs: int
    inputs: tuple[str, ...]
    carry_outputs: tuple[str, ...]
    head_outputs: dict[str, str]  # decoder key -> graph output name
    confidence_outputs: dict[str, str] = field(default_factory=dict)  # exit rule -> graph output name
    image_input: str = IMAGE_INPUT  # the graph's name of its ``image`` input (a YOLO export's: ``images``)

    def graph_inputs(self) -> tuple[str, ...]:
        """``inputs`` as the graph names them."""
        return tuple(self.graph_name(n) for n in self.inputs)

    def graph_name(self, name: str) -> str:
        """The graph's name of the manifest input ``name``."""
        return self.image_input if name == IMAGE_INPUT else name

    def to_dict(self, root: Path) -> dict:
        """The manifest entry; ``file`` relative to the model directory ``root``."""
        entry = {"name": self.name, "file": os.path.relpath(self.file, root), "macs": int(self.macs),
                 "inputs": list(self.inputs), "carry_outputs": list(self.carry_outputs),
                 "head_outputs": dict(self.head_outputs)}
        if self.confidence_outputs:
            entry["confidence_outputs"] = dict(self.confidence_outputs)
        if self.image_input != IMAGE_INPUT:
            entry["image_input"] = self.image_input
        return entry


@dataclass(frozen=True)
class AppealSpec:
    """When a frame may be appealed to a big network (AppealNet): after local stage ``stage``, if
    its confidence output ``confidence`` (the predictor's q(x)) is below the current mode's
    threshold. Modes without a threshold never appeal."""

    stage: int
    confidence: str
    big_model: str  # the model an appeal server should answer with
    thresholds: dict[str, float]  # vehicle mode -> q threshold

    def to_dict(self) -> dict:
        return {"stage": int(self.stage), "confidence": self.confidence, "big_model": self.big_model,
                "thresholds": {m: float(t) for m, t in self.thresholds.items()}}


@dataclass(frozen=True)
class Manifest:
    """A validated anytime model description."""

    name: str
    task: str
    labels: tuple[str, ...]
    input: InputSpec
    decoder: DecoderSpec
    stages: tuple[StageSpec, ...]
    gate_rule: str | None = None  # the exit rule the runtime gate uses by default
    policies: tuple[LinearPolicy, ...] = ()  # learned exit policy per early exit (rule "policy")
    gates: dict[str, dict[str, tuple[float, ...]]] = field(default_factory=dict)  # rule -> mode -> per stage
    full_model: StageSpec | None = None  # optional static single graph, for benchmarks
    appeal: AppealSpec | None = None  # optional appeals to a big network
    root: Path = Path(".")

    @property
    def total_macs(self) -> int:
        return sum(s.macs for s in self.stages)

    def to_dict(self) -> dict:
        """The YAML document :func:`load_manifest` reads back into this manifest."""
        data = {"format_version": FORMAT_VERSION, "name": self.name, "task": self.task, "labels": list(self.labels),
                "input": self.input.to_dict(), "decoder": self.decoder.to_dict(),
                "stages": [s.to_dict(self.root) for s in self.stages]}
        if self.full_model is not None:
            data["full_model"] = self.full_model.to_dict(self.root)
        if self.gate_rule is not None:
            data["gate"] = {"rule": self.gate_rule, **({"policy": [p.to_dict() for p in self.policies]}
                                                       if self.policies else {}),
                            "thresholds": {r: {m: [float(t) for t in v] for m, v in modes.items()}
                                           for r, modes in self.gates.items()}}
        if self.appeal is not None:
            data["appeal"] = self.appeal.to_dict()
        return data


def _get(data: dict, key: str, where: str, kind: type) -> Any:
    """``data[key]`` checked to be of ``kind`` (bool is not accepted as int)."""
    if not isinstance(data, dict) or key not in data:
        raise ManifestError(f"{where}.{key}: missing")
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ManifestError(f"{where}.{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _names(data: Any, where: str) -> dict[str, str]:
    """A mapping of names to graph output names."""
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ManifestError(f"{where}: expected a mapping of name -> graph output name")
    return {str(k): v for k, v in data.items()}


def _policies(data: Any, task: str, stages: tuple[StageSpec, ...]) -> tuple[LinearPolicy, ...]:
    if data is None:
        return ()
    if not isinstance(data, list) or len(data) != len(stages) - 1:
        raise ManifestError(f"gate.policy: expected one policy per early exit ({len(stages) - 1})")
    try:
        policies = tuple(LinearPolicy.from_dict(p) for p in data)
    except (TypeError, KeyError, ValueError) as exc:
        raise ManifestError(f"gate.policy: {exc}") from exc
    for i, policy in enumerate(policies):
        expected = (DETECTION_FEATURES if task == "detection"
                    else 4 if "confidence" in stages[i].confidence_outputs else 3)
        if len(policy.weights) != expected:
            raise ManifestError(f"gate.policy[{i}]: expected {expected} weights for this {task} stage, "
                                f"got {len(policy.weights)}")
    return policies


def _available(rule: str, task: str, stages: tuple[StageSpec, ...], policies: tuple) -> bool:
    """Whether every early exit can score ``rule``."""
    if rule in DERIVED_RULES:
        return task == "classification"
    if rule == "policy":
        return bool(policies)
    return all(rule in s.confidence_outputs for s in stages[:-1])


def _gates(data: Any, task: str, stages: tuple[StageSpec, ...]) -> tuple[str | None, tuple[LinearPolicy, ...], dict]:
    """The ``gate`` section: default rule, learned policies and, per rule and vehicle mode, one
    threshold per stage."""
    if data is None:
        return None, (), {}
    rule = _get(data, "rule", "gate", str)
    policies = _policies(data.get("policy"), task, stages)
    thresholds = data.get("thresholds") or {}
    if not isinstance(thresholds, dict):
        raise ManifestError("gate.thresholds: expected a mapping of rule -> mode -> thresholds")
    gates: dict[str, dict[str, tuple[float, ...]]] = {}
    for name, per_mode in thresholds.items():
        if not _available(name, task, stages, policies):
            raise ManifestError(f"gate.thresholds.{name}: stages cannot score {name!r} (no such confidence output"
                                f"{' or policy' if name == 'policy' else ''})")
        if not isinstance(per_mode, dict):
            raise ManifestError(f"gate.thresholds.{name}: expected a mapping of mode -> thresholds")
        gates[str(name)] = {}
        for mode, values in per_mode.items():
            if not isinstance(values, list) or len(values) != len(stages):
                raise ManifestError(f"gate.thresholds.{name}.{mode}: expected one threshold per stage ({len(stages)})")
            gates[str(name)][str(mode)] = tuple(float(t) for t in values)
    if rule not in gates:
        raise ManifestError(f"gate.rule: {rule!r} has no thresholds (calibrated: {sorted(gates) or 'none'})")
    return rule, policies, gates


def _appeal(data: Any, stages: tuple[StageSpec, ...]) -> AppealSpec | None:
    """The ``appeal`` section: the deciding stage, its q(x) output, the big model, thresholds."""
    if data is None:
        return None
    stage = _get(data, "stage", "appeal", int)
    if not 0 <= stage < len(stages):
        raise ManifestError(f"appeal.stage: {stage} is not a stage index (0..{len(stages) - 1})")
    confidence = _get(data, "confidence", "appeal", str)
    if confidence not in stages[stage].confidence_outputs:
        raise ManifestError(f"appeal.confidence: stage {stage} has no confidence output {confidence!r} "
                            f"(it has {sorted(stages[stage].confidence_outputs) or 'none'})")
    thresholds = data.get("thresholds") or {}
    if not isinstance(thresholds, dict) or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1 for t in thresholds.values()):
        raise ManifestError("appeal.thresholds: expected a mapping of vehicle mode -> threshold in [0, 1]")
    return AppealSpec(stage, confidence, _get(data, "big_model", "appeal", str),
                      {str(m): float(t) for m, t in thresholds.items()})


def _stage(data: Any, where: str, root: Path, head_keys: tuple[str, ...]) -> StageSpec:
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected a mapping")
    file = root / _get(data, "file", where, str)
    if not file.is_file():
        raise ManifestError(f"{where}.file: {file} does not exist")
    macs = _get(data, "macs", where, int)
    if macs <= 0:
        raise ManifestError(f"{where}.macs: must be a positive integer, got {macs}")
    heads = _get(data, "head_outputs", where, dict)
    missing = [k for k in head_keys if k not in heads]
    if missing:
        raise ManifestError(f"{where}.head_outputs: missing {', '.join(missing)}")
    return StageSpec(
        name=str(data.get("name", where)),
        file=file,
        macs=macs,
        inputs=tuple(_get(data, "inputs", where, list)),
        carry_outputs=tuple(data.get("carry_outputs", [])),
        head_outputs={str(k): str(v) for k, v in heads.items()},
        confidence_outputs=_names(data.get("confidence_outputs", {}), f"{where}.confidence_outputs"),
        image_input=_get(data, "image_input", where, str) if "image_input" in data else IMAGE_INPUT,
    )


def _decoder(dec: Any, task: str) -> DecoderSpec:
    """The ``decoder`` section, one of the task's decoders."""
    kind = _get(dec, "type", "decoder", str)
    if kind not in DECODERS[task]:
        raise ManifestError(f"decoder.type: {kind!r} unsupported for {task} (expected one of "
                            f"{', '.join(repr(d) for d in DECODERS[task])})")
    if kind == "softmax":
        return DecoderSpec("softmax")
    if kind == "centernet":
        offset_range = dec.get("offset_range", 0)
        if isinstance(offset_range, bool) or not isinstance(offset_range, int) or offset_range < 0:
            raise ManifestError(f"decoder.offset_range: expected an integer >= 0, got {offset_range!r}")
        return DecoderSpec("centernet", _get(dec, "stride", "decoder", int), int(dec.get("max_detections", 50)),
                           int(dec.get("nms_kernel", 3)), offset_range=offset_range)
    max_detections = (_get(dec, "max_detections", "decoder", int) if "max_detections" in dec
                      else YOLO_DECODER.max_detections)
    iou = dec.get("nms_iou", YOLO_DECODER.nms_iou)
    if isinstance(iou, bool) or not isinstance(iou, (int, float)) or not 0 < iou <= 1:
        raise ManifestError(f"decoder.nms_iou: expected a number in (0, 1], got {iou!r}")
    if max_detections <= 0:
        raise ManifestError(f"decoder.max_detections: must be a positive integer, got {max_detections}")
    return DecoderSpec("yolo", max_detections=max_detections, nms_iou=float(iou))


def _parse(data: Any, root: Path) -> Manifest:
    if not isinstance(data, dict):
        raise ManifestError("manifest: expected a mapping at the top level")
    version = _get(data, "format_version", "manifest", int)
    if version != FORMAT_VERSION:
        raise ManifestError(f"manifest.format_version: {version} unsupported (expected {FORMAT_VERSION})")
    task = _get(data, "task", "manifest", str)
    if task not in DECODERS:
        raise ManifestError(f"manifest.task: {task!r} unsupported (expected one of {', '.join(DECODERS)})")
    labels = tuple(_get(data, "labels", "manifest", list))
    inp = _get(data, "input", "manifest", dict)
    mean, std = _get(inp, "mean", "input", list), _get(inp, "std", "input", list)
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise ManifestError("input.mean/std: expected three values each, std > 0")
    input_spec = InputSpec(_get(inp, "size", "input", int), tuple(mean), tuple(std), int(inp.get("pad_value", 114)))
    decoder = _decoder(_get(data, "decoder", "manifest", dict), task)
    head_keys = HEAD_KEYS[decoder.type]
    raw_stages = _get(data, "stages", "manifest", list)
    if not raw_stages:
        raise ManifestError("manifest.stages: at least one stage is required")
    stages = tuple(_stage(s, f"stages[{i}]", root, head_keys) for i, s in enumerate(raw_stages))
    available = {IMAGE_INPUT}
    for i, stage in enumerate(stages):
        unknown = [n for n in stage.inputs if n not in available]
        if unknown:
            raise ManifestError(f"stages[{i}].inputs: {', '.join(unknown)} not produced by an earlier stage")
        available.update(stage.carry_outputs)
    gate_rule, policies, gates = _gates(data.get("gate"), task, stages)
    full = data.get("full_model")
    return Manifest(
        name=_get(data, "name", "manifest", str),
        task=task,
        labels=labels,
        input=input_spec,
        decoder=decoder,
        stages=stages,
        gate_rule=gate_rule,
        policies=policies,
        gates=gates,
        full_model=_stage(full, "full_model", root, head_keys) if full is not None else None,
        appeal=_appeal(data.get("appeal"), stages),
        root=root,
    )


def save_manifest(manifest: Manifest) -> Path:
    """Write ``manifest`` to ``<manifest.root>/manifest.yaml`` and return the path. It replaces the
    old file only once it loads back: an invalid manifest raises ``ManifestError`` and leaves the
    old one as it was."""
    path = manifest.root / "manifest.yaml"
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(manifest.to_dict(), sort_keys=False))
    try:
        load_manifest(tmp)
    except ManifestError:
        tmp.unlink()
        raise
    tmp.replace(path)
    return path


def load_manifest(path: str | Path) -> Manifest:
    """Load and validate ``manifest.yaml`` (or a model directory containing one), or describe an
    ultralytics YOLO detection export (a ``.onnx`` file) with :func:`yolo_manifest`."""
    path = Path(path)
    if path.suffix == ".onnx":
        return yolo_manifest(path)
    if path.is_dir():
        path = path / "manifest.yaml"
    if not path.is_file():
        raise ManifestError(f"manifest: {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ManifestError(f"manifest: {path} is not valid YAML: {exc}") from exc
    return _parse(data, path.parent)


def check_yolo_output(shape: list, labels: tuple[str, ...], where: str) -> None:
    """A YOLO detection head's output must be [1, 4 + C, N] with C = ``len(labels)`` (N may be
    dynamic); ManifestError naming ``where`` otherwise."""
    channels = 4 + len(labels)
    batch_ok = len(shape) == 3 and (shape[0] == 1 or not isinstance(shape[0], int))  # 1 or dynamic
    if not batch_ok or shape[1] != channels:
        raise ManifestError(f"{where}: output shape {list(shape)} is not (1, 4 + classes, anchors) = "
                            f"(1, {channels}, N) for {len(labels)} class names; expected an ultralytics detection "
                            "export without NMS "
                            "(not end-to-end, not segmentation/pose/obb)")


def _yolo_labels(meta: dict[str, str], path: Path) -> tuple[str, ...]:
    """Class names from the export's ``names`` metadata: "{0: 'a', 1: 'b'}" (or a list)."""
    if "names" not in meta:
        raise ManifestError(f"{path}: no 'names' in the ONNX metadata: not an ultralytics YOLO export "
                            f"(metadata keys: {sorted(meta) or 'none'})")
    try:
        names = ast.literal_eval(meta["names"])  # a Python literal written by ultralytics; never eval
    except (ValueError, SyntaxError) as exc:
        raise ManifestError(f"{path}: metadata 'names' is not a Python literal: {meta['names']!r}") from exc
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    if (not isinstance(names, dict) or not names or not all(type(k) is int for k in names)
            or sorted(names) != list(range(len(names))) or not all(isinstance(n, str) for n in names.values())):
        raise ManifestError(f"{path}: metadata 'names' must map class ids 0..C-1 to names, got {meta['names']!r}")
    return tuple(names[i] for i in range(len(names)))


def _graph_macs(path: Path) -> int:
    """MACs counted from the graph (needs the ``onnx`` package, which the runtime does not: 0
    without it)."""
    try:
        from ..export.macs import count_macs  # onnx only, no torch
    except ImportError:
        warnings.warn(f"{path}: MACs not counted (the onnx package is not installed); the manifest says 0",
                      stacklevel=3)
        return 0
    try:
        return count_macs(path)
    except ValueError as exc:  # a node whose shapes onnx cannot infer
        warnings.warn(f"MACs not counted: {exc}; the manifest says 0", stacklevel=3)
        return 0


def yolo_manifest(path: str | Path) -> Manifest:
    """Describe an ultralytics YOLO detection export (``model.export(format="onnx")``) as a
    one-stage detection model, checked against the graph.

    Input: the graph's one input, a fixed square [1, 3, S, S] float32, RGB 0..1 letterboxed with
    pad 114 (mean 0, std 255 in the manifest's pixel units). Output: [1, 4 + C, N] (cx, cy, w, h
    in input pixels, C class scores), decoded with class-wise NMS (``yolo`` decoder). Labels: the
    metadata ``names``. The stage is also the ``full_model``. Raises ``ManifestError`` naming what
    does not fit.

    The package's letterbox (``letterbox.py``) places the image as ultralytics' ``LetterBox``
    (``auto=False``, centred) does for a fixed-size export: scale min(S/h, S/w), size rounded,
    bilinear resize, pad 114, top/left pad floor(pad / 2) (ultralytics' round(pad / 2 - 0.1) is
    the same integer). Ultralytics' own validator differs: it letterboxes rectangular batches.
    """
    import onnxruntime as ort  # the runtime's own dependency; imported here so manifests load without it

    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest: {path} does not exist")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # metadata and shapes only
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for corrupt graphs
        raise ManifestError(f"{path}: not a loadable ONNX graph: {exc}") from exc
    meta = session.get_modelmeta().custom_metadata_map
    task = meta.get("task", "detect")
    if task != "detect":
        raise ManifestError(f"{path}: not a detection export (metadata task {task!r}; only 'detect' is supported)")
    if meta.get("end2end", "False") == "True":
        raise ManifestError(f"{path}: an end-to-end export (NMS inside the graph) is not supported; "
                            "export with nms=False")
    labels = _yolo_labels(meta, path)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise ManifestError(f"{path}: expected one image input, the graph has {[i.name for i in inputs]}")
    image = inputs[0]
    shape = list(image.shape)
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape) or shape[:2] != [1, 3] or shape[2] != shape[3]:
        raise ManifestError(f"{path}: input {image.name!r} has shape {shape}; expected a fixed square [1, 3, S, S] "
                            "(export with a square imgsz, dynamic=False)")
    if image.type != "tensor(float)":
        raise ManifestError(f"{path}: input {image.name!r} is {image.type}; expected tensor(float) "
                            "(export without half)")
    check_yolo_output(list(outputs[0].shape), labels, f"{path}: output {outputs[0].name!r}")
    stage = StageSpec(name=path.stem, file=path, macs=_graph_macs(path), inputs=(IMAGE_INPUT,), carry_outputs=(),
                      head_outputs={YOLO_HEAD: outputs[0].name}, image_input=image.name)
    return Manifest(name=path.stem, task="detection", labels=labels,
                    input=InputSpec(shape[2], (0.0, 0.0, 0.0), (255.0, 255.0, 255.0), 114),
                    decoder=YOLO_DECODER, stages=(stage,), full_model=stage, root=path.parent)
