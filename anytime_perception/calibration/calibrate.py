"""Calibrate exit thresholds per vehicle mode on the deployed ONNX stages and write them into the
model's manifest (the ``gate`` section the runtime reads).

Thresholds are tuned per exit (``sequential_thresholds``) for every rule except those in
``single_rules``: by default PTEEnet's ``confidence`` head, which the paper thresholds with one T
for all exits. The manifest holds one threshold per stage either way (a single T is repeated), so
the runtime reads both alike; each summary row says which way it was tuned (``thresholds``)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..runtime.exit_rules import DERIVED_RULES, LinearPolicy, confidence_features, rule_scores
from ..runtime.manifest import load_manifest, save_manifest
from ..runtime.model import AnytimeModel
from ..runtime.modes import ModeTable
from ..runtime.preprocess import Preprocessor
from .policy import learn_policy
from .rules import apply_thresholds, thresholds_for_macs, tune_thresholds

__all__ = ["SINGLE_THRESHOLD_RULES", "ExitRecords", "collect", "available_rules", "rule_matrix", "policy_features",
           "mode_thresholds", "calibrate", "cheapest_rule", "print_summary", "write_gate"]

SINGLE_THRESHOLD_RULES = ("confidence",)  # PTEEnet: one confidence threshold T for every exit


@dataclass(frozen=True)
class ExitRecords:
    """Every exit's outputs on a labelled set, as the deployed graphs compute them."""

    logits: np.ndarray  # [exits, samples, classes]
    confidences: dict[str, np.ndarray]  # graph confidence output -> [exits - 1, samples]
    labels: np.ndarray  # [samples]
    stage_macs: np.ndarray  # [exits], incremental

    @property
    def correct(self) -> np.ndarray:
        return self.logits.argmax(-1) == self.labels[None]

    @property
    def cumulative_macs(self) -> np.ndarray:
        return np.cumsum(self.stage_macs).astype(np.float64)


def collect(model: AnytimeModel, images: np.ndarray, labels: np.ndarray) -> ExitRecords:
    """Run every stage of a classification model on ``images`` (uint8 [N, H, W, 3] RGB)."""
    if model.manifest.task != "classification":
        raise ValueError(f"{model.manifest.name}: calibration on labelled images needs a classification model")
    preprocess = Preprocessor(model.manifest.input)
    exits = model.num_stages
    logits: list[list[np.ndarray]] = [[] for _ in range(exits)]
    names = sorted(model.manifest.stages[0].confidence_outputs)
    confidences: dict[str, list[list[float]]] = {n: [[] for _ in range(exits - 1)] for n in names}
    for image in images:
        x, _ = preprocess(image)
        for step in model.stages(x):
            logits[step.k].append(np.ravel(step.heads["logits"]))
            for n in names if step.k < exits - 1 else ():
                confidences[n][step.k].append(step.confidences[n])
    return ExitRecords(np.stack([np.stack(per_exit) for per_exit in logits]),
                       {n: np.asarray(v) for n, v in confidences.items()}, np.asarray(labels),
                       np.asarray([s.macs for s in model.manifest.stages]))


def available_rules(records: ExitRecords) -> list[str]:
    """Rules these records can score: derived from logits, graph confidences, the learned policy."""
    return [*DERIVED_RULES, *records.confidences, "policy"]


def rule_matrix(rule: str, records: ExitRecords, policies: list[LinearPolicy] | None = None) -> np.ndarray:
    """Scores ``[exits, samples]`` of ``rule`` (the last exit's row is unused: it always answers)."""
    early = records.logits[:-1]
    if rule in DERIVED_RULES:
        scores = rule_scores(rule, early)
    elif rule == "policy":
        features = policy_features(records)
        scores = np.stack([p.exit_probability(features[k]) for k, p in enumerate(policies)])
    else:
        scores = records.confidences[rule]
    return np.concatenate([scores, np.zeros((1, scores.shape[1]))])


def policy_features(records: ExitRecords) -> np.ndarray:
    """Features of every early exit (the exit's confidence head included when it has one)."""
    conf = records.confidences.get("confidence")
    exits = [confidence_features(records.logits[k], None if conf is None else conf[k])
             for k in range(len(records.logits))[:-1]]
    return np.stack(exits + [np.zeros_like(exits[0])])


def mode_thresholds(rule: str, scores: np.ndarray, correct: np.ndarray, cumulative: np.ndarray,
                    modes: ModeTable, mode: str = "per_exit") -> tuple[dict[str, list[float]], list[dict]]:
    """Per mode with an ``exit`` target: one threshold per stage (the last ``inf``), tuned by
    ``mode`` (``per_exit`` or ``single``), and a summary row (accuracy, mean MACs fraction, exit
    shares on these records)."""
    final = float(correct[-1].mean())
    thresholds, summary = {}, []
    for vehicle_mode in modes.modes.values():
        if vehicle_mode.exit_target is None:
            continue
        kind, value = vehicle_mode.exit_target
        t = (tune_thresholds(mode, scores, correct, cumulative, final - value) if kind == "max_accuracy_drop"
             else thresholds_for_macs(scores, correct, cumulative, value * cumulative[-1], mode=mode))
        result = apply_thresholds(scores, t, correct, cumulative)
        thresholds[vehicle_mode.name] = [float(x) for x in t] + [float("inf")]
        summary.append({"rule": rule, "mode": vehicle_mode.name, "thresholds": mode, "target": f"{kind}={value}",
                        "accuracy": result.accuracy,
                        "final_accuracy": final, "mean_macs_fraction": result.mean_macs / cumulative[-1],
                        "exit_share": list(result.exit_share)})
    return thresholds, summary


def calibrate(records: ExitRecords, modes: ModeTable, rules: list[str], policy_lambda: float = 0.1,
              single_rules: tuple[str, ...] = SINGLE_THRESHOLD_RULES
              ) -> tuple[dict[str, dict[str, list[float]]], list[LinearPolicy], list[dict]]:
    """Thresholds per rule and mode for each mode's ``exit`` target, the learned policy, and the
    summary rows of every calibration. Rules in ``single_rules`` get one threshold for all exits
    (PTEEnet's T; pass ``()`` for per-exit thresholds everywhere), the others one per exit."""
    correct, cumulative = records.correct, records.cumulative_macs
    policies = learn_policy(policy_features(records), correct, cumulative, policy_lambda) if "policy" in rules else []
    thresholds: dict[str, dict[str, list[float]]] = {}
    summary: list[dict] = []
    for rule in rules:
        thresholds[rule], rows = mode_thresholds(rule, rule_matrix(rule, records, policies), correct, cumulative, modes,
                                                 "single" if rule in single_rules else "per_exit")
        summary += rows
    return thresholds, policies, summary


def print_summary(summary: list[dict], columns: list[tuple[str, str, int, str]]) -> None:
    """Print summary rows as a fixed-width table; ``columns``: (header, key, width, number format),
    an empty format for a left-aligned text column."""
    print("".join(f"{h:<{w}}" if not f else f"{h:>{w}}" for h, _, w, f in columns))
    for row in summary:
        print("".join(f"{row[k]:<{w}}" if not f else f"{row[k]:>{w}{f}}" for _, k, w, f in columns))


def cheapest_rule(summary: list[dict], modes: ModeTable) -> str:
    """The rule with the lowest mean MACs over the modes with an accuracy-drop target (all of them
    keep their target), ties broken by the highest accuracy in the modes with a MACs target."""
    drop_modes = {m.name for m in modes.modes.values() if m.exit_target and m.exit_target[0] == "max_accuracy_drop"}

    def cost(rule: str) -> tuple[float, float]:
        rows = [r for r in summary if r["rule"] == rule]
        drop = [r["mean_macs_fraction"] for r in rows if r["mode"] in drop_modes]
        macs = [r["accuracy"] for r in rows if r["mode"] not in drop_modes]
        return float(np.mean(drop)) if drop else 0.0, -float(np.mean(macs)) if macs else 0.0
    if not summary:
        raise ValueError("no mode of the modes file has an exit target: nothing to choose a rule by")
    return min(dict.fromkeys(r["rule"] for r in summary), key=cost)


def write_gate(model_dir: str | Path, rule: str, thresholds: dict[str, dict[str, list[float]]],
               policies: list[LinearPolicy]) -> Path:
    """Write the gate (default rule, learned policies, thresholds per rule and mode) into
    ``model_dir/manifest.yaml``; an invalid gate raises ``ManifestError`` and changes nothing."""
    gates = {r: {m: tuple(float(t) for t in v) for m, v in modes.items()} for r, modes in thresholds.items()}
    return save_manifest(replace(load_manifest(model_dir), gate_rule=rule, policies=tuple(policies), gates=gates))
