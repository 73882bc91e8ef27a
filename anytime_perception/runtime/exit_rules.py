"""Exit rules: how sure an exit is, as one score per input (higher = surer).

- ``msp``: max softmax probability; ``gap``: top-1 minus top-2 probability; ``entropy``: negative
  entropy of the softmax (BranchyNet-style); computed from a classifier exit's logits.
- ``policy``: a learned exit policy's exit probability, a logistic function of the exit's
  confidence features: for classifiers the Bolukbasi et al. policy over ``confidence_features``;
  for detectors the frame gate over ``detection_features`` (trained to predict that the stage's
  detections already match the last stage's).
- any other name: a confidence the stage graph outputs itself (PTEEnet's sigmoid head ``confidence``,
  a decision gate's score ``distance``, a detector's frame gate). The formula lives in the graph
  (a gate exported from ``exits_run --gate-score raw`` outputs ``max_c w_c^T x + b_c``, one from
  ``normalised`` divides by ``||w_c||``) and the thresholds are calibrated on that same output,
  so the runtime reads every manifest alike whichever formula its graphs compute.
Works on one input (``[classes]``) or a batch (``[..., classes]``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DERIVED_RULES", "PEAK_FLOOR", "softmax", "rule_scores", "confidence_features", "detection_features",
           "DETECTION_FEATURES", "LinearPolicy"]

DERIVED_RULES = ("msp", "gap", "entropy")
PEAK_FLOOR = 0.05  # detector peaks below this score are ignored by ``detection_features``
DETECTION_FEATURES = 6


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def rule_scores(rule: str, logits: np.ndarray) -> np.ndarray:
    """Score of a rule derived from logits (``msp``, ``gap``, ``entropy``)."""
    p = softmax(logits)
    if rule == "msp":
        return p.max(-1)
    if rule == "gap":
        top2 = np.sort(p, -1)[..., -2:]
        return top2[..., 1] - top2[..., 0]
    if rule == "entropy":
        return (p * np.log(np.clip(p, 1e-12, None))).sum(-1)
    raise ValueError(f"{rule!r} is not derived from logits; derived rules: {', '.join(DERIVED_RULES)}")


def confidence_features(logits: np.ndarray, confidence: np.ndarray | None = None) -> np.ndarray:
    """Features of learned policies ``[..., F]``: top-1 and top-2 probabilities, negative entropy,
    and the exit's own confidence output when given."""
    p = softmax(logits)
    top2 = np.sort(p, -1)[..., -2:]
    columns = [top2[..., 1], top2[..., 0], rule_scores("entropy", logits)]
    if confidence is not None:
        columns.append(np.asarray(confidence, dtype=np.float64))
    return np.stack(columns, -1)


def detection_features(scores: np.ndarray) -> np.ndarray:
    """Frame-gate features of a detector stage from its peak scores (>= ``PEAK_FLOOR``): the three
    highest scores, the number of peaks >= 0.3, the number of ambiguous peaks (0.1 to 0.5) and
    the summed ambiguity ``min(s, 1 - s)``."""
    s = np.sort(np.asarray(scores, dtype=np.float64)[np.asarray(scores) >= PEAK_FLOOR])[::-1]
    top = np.zeros(3)
    top[: min(3, len(s))] = s[:3]
    return np.array([*top, (s >= 0.3).sum(), ((s >= 0.1) & (s < 0.5)).sum(), np.minimum(s, 1 - s).sum()])


@dataclass(frozen=True)
class LinearPolicy:
    """Exit probability ``sigmoid(w . (f - mean) / std + b)`` over ``confidence_features``; a
    constant policy has zero weights and ``b = +-60``."""

    weights: np.ndarray
    bias: float
    mean: np.ndarray
    std: np.ndarray

    def exit_probability(self, features: np.ndarray) -> np.ndarray:
        z = ((features - self.mean) / self.std) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))

    def to_dict(self) -> dict:
        return {"weights": [float(w) for w in self.weights], "bias": float(np.clip(self.bias, -60, 60)),
                "mean": [float(m) for m in self.mean], "std": [float(s) for s in self.std]}

    @classmethod
    def from_dict(cls, data: dict) -> "LinearPolicy":
        weights = np.asarray(data["weights"], dtype=np.float64)
        mean, std = np.asarray(data["mean"], dtype=np.float64), np.asarray(data["std"], dtype=np.float64)
        if weights.ndim != 1 or mean.shape != weights.shape or std.shape != weights.shape or (std <= 0).any():
            raise ValueError("policy: weights, mean and std need the same number of values, std > 0")
        return cls(weights, float(data["bias"]), mean, std)
