"""Big/little operating points from arrays (no torch, no models): an input whose score reaches the
threshold is answered by the little network (*skipped*), every other one is *appealed* to the big
network.

- skipping rate SR: share answered by the little network; appealing rate AR = 1 - SR;
- accuracy: little answers on skipped inputs, big answers on appealed ones;
- accuracy degradation: the big network's accuracy minus that accuracy;
- MACs per input: the little network's for everyone plus the big network's for appealed inputs,
  ``little_macs + AR * big_macs``.

Scores are AppealNet's q(x) or a rule of the little network's logits (``runtime.exit_rules``:
MSP, gap, entropy). In the black-box setting the big network is an oracle: ``big_correct`` is all
true.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BigLittle", "OperatingPoint", "operating_points", "apply_threshold", "threshold_for_degradation",
           "point_at_degradation"]


@dataclass(frozen=True)
class BigLittle:
    """Per-input outcomes of a big/little pair on one labelled set."""

    scores: np.ndarray  # [N], higher: surer that the little answer is good
    little_correct: np.ndarray  # [N] bool
    big_correct: np.ndarray  # [N] bool
    little_macs: float
    big_macs: float

    @classmethod
    def of(cls, scores: np.ndarray, little_logits: np.ndarray, big_logits: np.ndarray | None, labels: np.ndarray,
           little_macs: float, big_macs: float) -> "BigLittle":
        """From logits ``[N, classes]``; ``big_logits`` None: the big network is an oracle."""
        big_correct = np.ones(len(labels), bool) if big_logits is None else big_logits.argmax(-1) == labels
        return cls(np.asarray(scores, np.float64), little_logits.argmax(-1) == labels, big_correct,
                   float(little_macs), float(big_macs))

    @property
    def big_accuracy(self) -> float:
        return float(self.big_correct.mean())


@dataclass(frozen=True)
class OperatingPoint:
    """The outcome of one threshold."""

    threshold: float
    skipping_rate: float
    appealing_rate: float
    accuracy: float
    degradation: float  # big accuracy - accuracy
    macs: float  # mean per input


def _point(pair: BigLittle, threshold: float, skipped: int, little_hits: float, big_hits: float) -> OperatingPoint:
    n = len(pair.scores)
    accuracy = (little_hits + big_hits) / n
    appealing = 1.0 - skipped / n
    return OperatingPoint(float(threshold), skipped / n, appealing, accuracy, pair.big_accuracy - accuracy,
                          pair.little_macs + appealing * pair.big_macs)


def operating_points(pair: BigLittle) -> list[OperatingPoint]:
    """Every distinct operating point, from appealing everything (threshold +inf) to skipping
    everything (the lowest score), by a sweep over the sorted scores."""
    order = np.argsort(-pair.scores, kind="stable")
    descending = pair.scores[order]
    little_hits = np.concatenate([[0], np.cumsum(pair.little_correct[order])])  # of the k best-scored
    big_hits = np.concatenate([[0], np.cumsum(pair.big_correct[order])])
    thresholds = np.concatenate([[np.inf], np.unique(pair.scores)[::-1]])
    skipped = np.searchsorted(-descending, -thresholds, side="right")  # inputs with score >= threshold
    return [_point(pair, t, int(k), little_hits[k], big_hits[-1] - big_hits[k]) for t, k in zip(thresholds, skipped)]


def apply_threshold(pair: BigLittle, threshold: float) -> OperatingPoint:
    """Skip the inputs whose score reaches ``threshold``, appeal the others."""
    skip = pair.scores >= threshold
    return _point(pair, threshold, int(skip.sum()), float(pair.little_correct[skip].sum()),
                  float(pair.big_correct[~skip].sum()))


def threshold_for_degradation(pair: BigLittle, degradation: float) -> float:
    """The lowest threshold (most inputs skipped, fewest MACs) whose degradation on ``pair`` stays
    within ``degradation``; appealing everything (+inf) always qualifies."""
    feasible = [p.threshold for p in operating_points(pair) if p.degradation <= degradation + 1e-12]
    return min(feasible)


def point_at_degradation(calibration: BigLittle, evaluation: BigLittle, degradation: float) -> OperatingPoint:
    """The threshold tuned on ``calibration`` for ``degradation``, measured on ``evaluation``."""
    return apply_threshold(evaluation, threshold_for_degradation(calibration, degradation))
