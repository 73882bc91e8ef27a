"""Exit rules: how sure an exit is, as one score per input (higher = surer).

- ``msp``: max softmax probability; ``gap``: top-1 minus top-2 probability; ``entropy``: negative
  entropy of the softmax (BranchyNet-style); computed from a classifier exit's logits.
- ``policy``: a learned exit policy's exit probability (Bolukbasi et al.), a logistic function of
  the exit's confidence features.
- any other name: a confidence the stage graph outputs itself (PTEEnet's sigmoid head ``confidence``,
  a decision gate's distance ``distance``, a detector's frame gate).
Works on one input (``[classes]``) or a batch (``[..., classes]``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DERIVED_RULES", "softmax", "rule_scores", "confidence_features", "LinearPolicy"]

DERIVED_RULES = ("msp", "gap", "entropy")


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


@dataclass(frozen=True)
class LinearPolicy:
    """Exit probability ``sigmoid(w . (f - mean) / std + b)`` over ``confidence_features``; a
    constant policy has zero weights and ``b = +-60``."""

    weights: np.ndarray
    bias: float
    mean: np.ndarray
    std: np.ndarray

    @property
    def uses_confidence(self) -> bool:
        return len(self.weights) == 4

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
        if weights.shape not in ((3,), (4,)) or mean.shape != weights.shape or std.shape != weights.shape or (std <= 0).any():
            raise ValueError("policy: weights, mean and std need 3 or 4 values each, std > 0")
        return cls(weights, float(data["bias"]), mean, std)
