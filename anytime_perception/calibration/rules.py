"""Thresholds on exit scores (``runtime.exit_rules``): how a set performs, and how to choose one.

An input leaves at the first exit whose score reaches that exit's threshold; the last exit always
answers. Arrays are ``[exits, samples]``; ``cumulative_macs[k]`` is the cost of leaving at exit k.

Two ways to tune them (``THRESHOLD_MODES``): ``per_exit`` (``sequential_thresholds``: one threshold
per exit, tuned exit by exit, the decision-gate paper's procedure and BranchyNet's) and ``single``
(``single_threshold``: one threshold T shared by every exit, PTEEnet's inference rule
``I(h_n >= T)``, the paper's default for its confidence head).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ExitOutcome", "THRESHOLD_MODES", "outcome", "first_exit", "apply_thresholds", "sequential_thresholds",
           "single_threshold", "tune_thresholds", "thresholds_for_macs", "soft_oracle"]

NEVER = np.inf  # a threshold that never lets an input exit
THRESHOLD_MODES = ("per_exit", "single")


@dataclass(frozen=True)
class ExitOutcome:
    """Where each input left and what that achieved."""

    exit_index: np.ndarray  # [samples]
    accuracy: float
    mean_macs: float
    exit_share: tuple[float, ...]  # share of inputs per exit


def outcome(exit_index: np.ndarray, correct: np.ndarray, cumulative_macs: np.ndarray) -> ExitOutcome:
    n = correct.shape[1]
    hits = correct[exit_index, np.arange(n)]
    shares = np.bincount(exit_index, minlength=correct.shape[0]) / n
    return ExitOutcome(exit_index, float(hits.mean()), float(cumulative_macs[exit_index].mean()),
                       tuple(float(s) for s in shares))


def first_exit(exits: np.ndarray) -> np.ndarray:
    """Index of the first exit taken per sample from a boolean ``[exits, samples]`` (last forced)."""
    exits = exits.copy()
    exits[-1] = True
    return exits.argmax(0)


def apply_thresholds(scores: np.ndarray, thresholds: np.ndarray, correct: np.ndarray,
                     cumulative_macs: np.ndarray) -> ExitOutcome:
    """Exit at the first exit whose score reaches its threshold (``thresholds`` has one per early exit)."""
    taken = scores[:-1] >= np.asarray(thresholds, dtype=np.float64)[:, None]
    return outcome(first_exit(np.concatenate([taken, np.ones((1, scores.shape[1]), bool)])), correct,
                    cumulative_macs)


def sequential_thresholds(scores: np.ndarray, correct: np.ndarray, cumulative_macs: np.ndarray,
                          target_accuracy: float) -> np.ndarray:
    """Thresholds tuned exit by exit (the decision-gate paper's procedure): each, given the earlier
    ones, is the lowest that keeps the overall accuracy (later early exits closed) at the target."""
    thresholds = np.full(scores.shape[0] - 1, NEVER)
    for k in range(len(thresholds)):
        candidates = np.unique(scores[k])[::-1]  # from strictest to loosest
        best = NEVER
        for t in _coarse(candidates):
            thresholds[k] = t
            if apply_thresholds(scores, thresholds, correct, cumulative_macs).accuracy >= target_accuracy - 1e-12:
                best = t
            else:
                break
        thresholds[k] = best
    return thresholds


def single_threshold(scores: np.ndarray, correct: np.ndarray, cumulative_macs: np.ndarray,
                     target_accuracy: float) -> np.ndarray:
    """One threshold T for every early exit (returned once per early exit): among the candidate
    values of T, the one with the fewest mean MACs whose accuracy keeps the target (ties: the more
    accurate); ``inf`` (never exit) when none does."""
    candidates = _coarse(np.unique(scores[:-1])[::-1])
    exits = scores.shape[0] - 1
    best, best_key = NEVER, None
    for t in candidates:
        result = apply_thresholds(scores, np.full(exits, t), correct, cumulative_macs)
        if result.accuracy >= target_accuracy - 1e-12:
            key = (result.mean_macs, -result.accuracy)
            if best_key is None or key < best_key:
                best, best_key = t, key
    return np.full(exits, best)


def tune_thresholds(mode: str, scores: np.ndarray, correct: np.ndarray, cumulative_macs: np.ndarray,
                    target_accuracy: float) -> np.ndarray:
    """Thresholds for ``target_accuracy`` by ``mode`` (``per_exit`` or ``single``)."""
    if mode == "per_exit":
        return sequential_thresholds(scores, correct, cumulative_macs, target_accuracy)
    if mode == "single":
        return single_threshold(scores, correct, cumulative_macs, target_accuracy)
    raise ValueError(f"threshold mode must be one of {', '.join(THRESHOLD_MODES)}, got {mode!r}")


def _coarse(sorted_desc: np.ndarray, points: int = 400) -> np.ndarray:
    """At most ``points`` candidate thresholds (quantiles of the scores, strictest first)."""
    if len(sorted_desc) <= points:
        return sorted_desc
    return sorted_desc[np.linspace(0, len(sorted_desc) - 1, points).round().astype(int)]


def thresholds_for_macs(scores: np.ndarray, correct: np.ndarray, cumulative_macs: np.ndarray,
                        max_mean_macs: float, steps: int = 20, mode: str = "per_exit") -> np.ndarray:
    """The most accurate thresholds (tuned by ``mode``) whose mean MACs stay within ``max_mean_macs``
    (bisection on the accuracy target; mean MACs fall as the target is lowered)."""
    def macs_at(target: float) -> tuple[np.ndarray, float]:
        thresholds = tune_thresholds(mode, scores, correct, cumulative_macs, target)
        return thresholds, apply_thresholds(scores, thresholds, correct, cumulative_macs).mean_macs

    high = float(correct[-1].mean())
    thresholds, macs = macs_at(high)
    if macs <= max_mean_macs:
        return thresholds
    low, best = 0.0, np.full(scores.shape[0] - 1, -NEVER)  # fallback: everyone leaves at the first exit
    for _ in range(steps):
        middle = (low + high) / 2
        thresholds, macs = macs_at(middle)
        if macs <= max_mean_macs:
            low, best = middle, thresholds
        else:
            high = middle
    return best


def soft_oracle(correct: np.ndarray, cumulative_macs: np.ndarray) -> ExitOutcome:
    """Exit at the cheapest exit that is correct (the last if none is)."""
    return outcome(first_exit(correct.astype(bool)), correct, cumulative_macs)
