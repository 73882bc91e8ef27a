"""An anytime model at run time: one ONNX Runtime session per stage, carry kept between calls.

A static detector is a one-stage model: a model directory whose one stage is its whole graph, or
an ultralytics YOLO detection export given as its ``.onnx`` file (``manifest.yolo_manifest``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
try:
    import onnxruntime as ort
except ImportError as exc:  # the package leaves the flavour to the installer: CPU or GPU build
    raise ImportError("anytime_perception needs ONNX Runtime: pip install 'anytime_perception[cpu]' (onnxruntime) "
                      "or 'anytime_perception[gpu]' (onnxruntime-gpu), or make setup [ORT=gpu]") from exc

from ..letterbox import Letterbox
from .abort import StageAborted
from .decoder import decode
from .exit_rules import DERIVED_RULES, PEAK_FLOOR, confidence_features, detection_features, rule_scores
from .manifest import IMAGE_INPUT, YOLO_HEAD, Manifest, ManifestError, StageSpec, check_yolo_output, load_manifest

__all__ = ["AnytimeModel", "available_providers", "ProviderError", "StageOutput", "StageStep"]

Carry = dict[str, np.ndarray]
StageOutput = tuple[Carry, dict[str, np.ndarray], float | None]  # new carry, heads, confidence


@dataclass(frozen=True)
class StageStep:
    """What one stage produced: its index, head outputs, every confidence output of its graph
    (by rule name) and the carry entries it added."""

    k: int
    heads: dict[str, np.ndarray]
    confidences: dict[str, float]
    carry: Carry


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build offers (CUDA/TensorRT with onnxruntime-gpu)."""
    return ort.get_available_providers()


class ProviderError(ValueError):
    """A requested execution provider is not what a session got (strict providers)."""


# Providers that keep tensors in device memory: with them the carry stays there between stages.
DEVICE_PROVIDERS = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda",
                    "ROCMExecutionProvider": "cuda", "MIGraphXExecutionProvider": "cuda",
                    "DmlExecutionProvider": "dml"}


def _session(stage: StageSpec, providers: Sequence[str], threads: int,
             manifest: Manifest | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(stage.file), options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own exception types for corrupt graphs
        raise ManifestError(f"{stage.name}.file: {stage.file} is not a loadable ONNX graph: {exc}") from exc
    graph_inputs = {i.name for i in session.get_inputs()}
    graph_outputs = {o.name: o for o in session.get_outputs()}
    if graph_inputs != set(stage.graph_inputs()):
        raise ManifestError(f"{stage.name}.inputs: manifest says {sorted(stage.graph_inputs())}, "
                            f"graph has {sorted(graph_inputs)}")
    declared = set(stage.carry_outputs) | set(stage.head_outputs.values())
    declared |= set(stage.confidence_outputs.values())
    if not declared <= set(graph_outputs):
        raise ManifestError(f"{stage.name}: outputs {sorted(declared - set(graph_outputs))} not in the graph")
    if manifest is not None and manifest.decoder.type == "yolo":
        head = stage.head_outputs[YOLO_HEAD]
        check_yolo_output(list(graph_outputs[head].shape), manifest.labels, f"{stage.name}.head_outputs.{YOLO_HEAD}")
    return session


class AnytimeModel:
    """Loads a manifest and runs its stages one at a time.

    Args:
        path: model directory or its ``manifest.yaml``, or an ultralytics YOLO detection export
            (``.onnx``: a one-stage model, see ``manifest.yolo_manifest``).
        providers: ONNX Runtime execution providers in priority order (default CPU).
        threads: intra-op threads per session (0: onnxruntime decides).
        gate_rule: the exit rule whose confidence the stages report (default: the manifest's).
        strict_providers: a requested provider this onnxruntime lacks, or one a session fell back
            from, raises ``ProviderError``; otherwise it is dropped and said in ``provider_warnings``.
        device_carry: keep the carry between stages as ONNX Runtime values bound with IOBinding
            (on the device of a GPU provider, so refinement does not copy it through host memory);
            default: on when the sessions run on a device provider.

    After loading, ``session_providers`` holds the providers each stage's session actually got.
    """

    def __init__(self, path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: int = 0, gate_rule: str | None = None, strict_providers: bool = False,
                 device_carry: bool | None = None) -> None:
        if not providers:
            raise ValueError("providers: empty list; give at least one, e.g. [CPUExecutionProvider]")
        self.provider_warnings: list[str] = []
        unknown = [p for p in providers if p not in available_providers()]
        if unknown:
            message = (f"{unknown} not available in this onnxruntime build (it has "
                       f"{available_providers()}; for CUDA install onnxruntime-gpu in place of onnxruntime)")
            if strict_providers or len(unknown) == len(providers):
                raise ProviderError(message)
            self.provider_warnings.append(message + f"; running on {[p for p in providers if p not in unknown]}")
        self.manifest: Manifest = load_manifest(path)
        self.requested_providers = tuple(providers)
        self.providers = tuple(p for p in providers if p not in unknown)
        self.gate_rule = gate_rule or self.manifest.gate_rule
        if gate_rule is not None and gate_rule not in self.manifest.gates:
            raise ValueError(f"gate rule {gate_rule!r} is not calibrated in {self.manifest.name}; "
                             f"calibrated: {sorted(self.manifest.gates) or 'none'}")
        self.sessions = [_session(s, self.providers, threads, self.manifest) for s in self.manifest.stages]
        self._full_session = self._full(threads)
        self.session_providers = [tuple(s.get_providers()) for s in self.sessions]
        for spec, got in zip(self.manifest.stages, self.session_providers):
            missing = [p for p in self.providers if p not in got]
            if missing:  # e.g. onnxruntime-gpu without a usable CUDA: the session fell back
                message = f"{spec.name}: session fell back from {missing}, runs on {list(got)}"
                if strict_providers:
                    raise ProviderError(message)
                self.provider_warnings.append(message)
        first = self.session_providers[0][0]
        self.device = DEVICE_PROVIDERS.get(first, "cpu")
        self.device_carry = self.device != "cpu" if device_carry is None else device_carry
        self._device_image: tuple[np.ndarray, ort.OrtValue] | None = None

    def _full(self, threads: int) -> ort.InferenceSession | None:
        """The full model's session: a stage's own when it is the same graph (a one-stage static
        model), else its own."""
        full = self.manifest.full_model
        if full is None:
            return None
        for spec, session in zip(self.manifest.stages, self.sessions):
            if spec.file.resolve() == full.file.resolve() and spec.graph_inputs() == full.graph_inputs():
                return session
        return _session(full, self.providers, threads, self.manifest)

    @property
    def num_stages(self) -> int:
        return len(self.sessions)

    def run_stage(self, k: int, image: np.ndarray, carry: Carry) -> StageOutput:
        """Run stage ``k`` on the preprocessed image and the carry of stages ``< k``; the
        confidence is the gate rule's score of this stage (None without a rule)."""
        carry, heads, confidences = self.run_stage_outputs(k, image, carry)
        return carry, heads, self.gate_score(k, heads, confidences)

    def stages(self, image: np.ndarray, last: int | None = None) -> Iterator[StageStep]:
        """Stages 0..``last`` (default: all) in order on one preprocessed image, the carry passed
        along, no scheduler: what evaluation, calibration and the big model iterate."""
        carry: Carry = {}
        for k in range(self.num_stages if last is None else last + 1):
            new, heads, confidences = self.run_stage_outputs(k, image, carry)
            carry.update(new)
            yield StageStep(k, heads, confidences, new)

    def policy_features(self, heads: dict[str, np.ndarray], confidences: dict[str, float]) -> np.ndarray:
        """The learned policy's features of one stage's outputs (classifier or detector)."""
        manifest = self.manifest
        if manifest.task == "detection":
            size = manifest.input.size
            peaks = decode(heads, manifest.decoder, Letterbox.fit(size, size, size), manifest.labels, PEAK_FLOOR)
            return detection_features(np.array([d.score for d in peaks]))
        return confidence_features(np.ravel(heads["logits"]), confidences.get("confidence"))

    def run_stage_outputs(self, k: int, image: np.ndarray, carry: Carry, options: ort.RunOptions | None = None
                          ) -> tuple[Carry, dict[str, np.ndarray], dict[str, float]]:
        """Stage ``k`` with every confidence output of its graph (for calibration). ``options``:
        the call's run options; a call stopped by their ``terminate`` flag (``Aborter``) raises
        ``StageAborted``."""
        try:
            if self.device_carry:
                return self._run_bound(self.sessions[k], self.manifest.stages[k],
                                       {**carry, IMAGE_INPUT: self._on_device(image, fresh=k == 0)}, options)
            return self._run(self.sessions[k], self.manifest.stages[k], {**carry, IMAGE_INPUT: image}, options)
        except Exception as exc:
            if options is not None and options.terminate:
                raise StageAborted(f"stage {k} stopped at its abort time") from exc
            raise

    def _on_device(self, image: np.ndarray, fresh: bool) -> ort.OrtValue:
        """The image as a device value, uploaded once per frame: at stage 0 (``fresh``), and
        again only if a later stage is given another array."""
        # one snapshot: the node's callback thread (stage 0 of a new frame) and its refinement thread
        # (later stages of the previous one) both get here; each returns the value of its own image
        cached = self._device_image
        if fresh or cached is None or cached[0] is not image:
            cached = self._device_image = (image, ort.OrtValue.ortvalue_from_numpy(image, self.device, 0))
        return cached[1]

    def _run_bound(self, session: ort.InferenceSession, spec: StageSpec, available: dict,
                   options: ort.RunOptions | None = None) -> tuple[Carry, dict[str, np.ndarray], dict[str, float]]:
        """One graph call through IOBinding: the carry outputs stay on the model's device as
        OrtValues (the next stage binds them as inputs without a copy); heads and confidences come
        back to host memory."""
        binding = session.io_binding()
        for name in spec.inputs:
            value = available[name]
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(spec.graph_name(name), value)
            else:
                binding.bind_cpu_input(spec.graph_name(name), np.ascontiguousarray(value))
        carried = list(dict.fromkeys(spec.carry_outputs))
        host = [n for n in dict.fromkeys(list(spec.head_outputs.values()) + list(spec.confidence_outputs.values()))
                if n not in carried]
        for name in carried:
            binding.bind_output(name, self.device, 0)
        for name in host:
            binding.bind_output(name, "cpu")
        session.run_with_iobinding(binding, options)
        values = dict(zip(carried + host, binding.get_outputs()))
        needed = set(spec.head_outputs.values()) | set(spec.confidence_outputs.values())
        arrays = {n: values[n].numpy() for n in needed}  # a carried head (cumulative logits) is copied once
        return AnytimeModel._split(spec, values, arrays)

    def gate_score(self, k: int, heads: dict[str, np.ndarray], confidences: dict[str, float]) -> float | None:
        """Stage ``k``'s score under the gate rule (None without a rule)."""
        rule = self.gate_rule
        if rule is None or k == self.num_stages - 1:
            return confidences.get(rule) if rule else None
        if rule in DERIVED_RULES:
            return float(rule_scores(rule, np.ravel(heads["logits"])))
        if rule == "policy":
            return float(self.manifest.policies[k].exit_probability(self.policy_features(heads, confidences)))
        return confidences[rule]

    def run_full(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Run the static single-graph model (benchmark baseline); heads only."""
        if self._full_session is None:
            raise RuntimeError(f"model {self.manifest.name} ships no full_model graph")
        return self._run(self._full_session, self.manifest.full_model, {IMAGE_INPUT: image})[1]

    @staticmethod
    def _run(session: ort.InferenceSession, spec: StageSpec, available: Carry,
             options: ort.RunOptions | None = None) -> tuple[Carry, dict[str, np.ndarray], dict[str, float]]:
        """New carry, heads and every confidence output of one graph call."""
        names = list(spec.carry_outputs) + list(spec.head_outputs.values()) + list(spec.confidence_outputs.values())
        names = list(dict.fromkeys(names))  # a carry tensor may also be a head (cumulative logits)
        values = dict(zip(names, session.run(names, {spec.graph_name(n): available[n] for n in spec.inputs}, options)))
        return AnytimeModel._split(spec, values, values)

    @staticmethod
    def _split(spec: StageSpec, carried: dict, host: dict[str, np.ndarray]
               ) -> tuple[Carry, dict[str, np.ndarray], dict[str, float]]:
        """A graph call's outputs by role: the carry (from ``carried``: host arrays, or device
        values under IOBinding), the heads and the confidences (from ``host``)."""
        carry = {n: carried[n] for n in spec.carry_outputs}
        heads = {key: host[name] for key, name in spec.head_outputs.items()}
        confidences = {rule: float(np.ravel(host[name])[0]) for rule, name in spec.confidence_outputs.items()}
        return carry, heads, confidences
