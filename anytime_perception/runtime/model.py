"""An anytime model at run time: one ONNX Runtime session per stage, carry kept between calls."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import onnxruntime as ort

from ..letterbox import Letterbox
from .decoder import decode_centernet
from .exit_rules import DERIVED_RULES, PEAK_FLOOR, confidence_features, detection_features, rule_scores
from .manifest import IMAGE_INPUT, Manifest, ManifestError, StageSpec, load_manifest

__all__ = ["AnytimeModel", "available_providers", "StageOutput", "StageStep"]

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


def _session(stage: StageSpec, providers: Sequence[str], threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(stage.file), options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own exception types for corrupt graphs
        raise ManifestError(f"{stage.name}.file: {stage.file} is not a loadable ONNX graph: {exc}") from exc
    graph_inputs = {i.name for i in session.get_inputs()}
    graph_outputs = {o.name for o in session.get_outputs()}
    if graph_inputs != set(stage.inputs):
        raise ManifestError(f"{stage.name}.inputs: manifest says {sorted(stage.inputs)}, graph has {sorted(graph_inputs)}")
    declared = set(stage.carry_outputs) | set(stage.head_outputs.values())
    declared |= set(stage.confidence_outputs.values())
    if not declared <= graph_outputs:
        raise ManifestError(f"{stage.name}: outputs {sorted(declared - graph_outputs)} not in the graph")
    return session


class AnytimeModel:
    """Loads a manifest and runs its stages one at a time.

    Args:
        path: model directory or its ``manifest.yaml``.
        providers: ONNX Runtime execution providers in priority order (default CPU).
        threads: intra-op threads per session (0: onnxruntime decides).
        gate_rule: the exit rule whose confidence the stages report (default: the manifest's).
    """

    def __init__(self, path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: int = 0, gate_rule: str | None = None) -> None:
        unknown = [p for p in providers if p not in available_providers()]
        if unknown:
            raise ValueError(f"providers {unknown} not available; this onnxruntime has {available_providers()}")
        self.manifest: Manifest = load_manifest(path)
        self.providers = tuple(providers)
        self.gate_rule = gate_rule or self.manifest.gate_rule
        if gate_rule is not None and gate_rule not in self.manifest.gates:
            raise ValueError(f"gate rule {gate_rule!r} is not calibrated in {self.manifest.name}; "
                             f"calibrated: {sorted(self.manifest.gates) or 'none'}")
        self.sessions = [_session(s, providers, threads) for s in self.manifest.stages]
        self._full_session = (_session(self.manifest.full_model, providers, threads)
                              if self.manifest.full_model else None)

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
            peaks = decode_centernet(heads, manifest.decoder, Letterbox.fit(size, size, size), manifest.labels, PEAK_FLOOR)
            return detection_features(np.array([d.score for d in peaks]))
        return confidence_features(np.ravel(heads["logits"]), confidences.get("confidence"))

    def run_stage_outputs(self, k: int, image: np.ndarray,
                          carry: Carry) -> tuple[Carry, dict[str, np.ndarray], dict[str, float]]:
        """Stage ``k`` with every confidence output of its graph (for calibration)."""
        return self._run(self.sessions[k], self.manifest.stages[k], {**carry, IMAGE_INPUT: image})

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
    def _run(session: ort.InferenceSession, spec: StageSpec,
             available: Carry) -> tuple[Carry, dict[str, np.ndarray], dict[str, float]]:
        """New carry, heads and every confidence output of one graph call."""
        names = list(spec.carry_outputs) + list(spec.head_outputs.values()) + list(spec.confidence_outputs.values())
        names = list(dict.fromkeys(names))  # a carry tensor may also be a head (cumulative logits)
        values = dict(zip(names, session.run(names, {n: available[n] for n in spec.inputs})))
        carry = {n: values[n] for n in spec.carry_outputs}
        heads = {key: values[name] for key, name in spec.head_outputs.items()}
        confidences = {rule: float(np.ravel(values[name])[0]) for rule, name in spec.confidence_outputs.items()}
        return carry, heads, confidences
