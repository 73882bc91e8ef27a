"""Learned exit policies (Bolukbasi et al., 2017, "Adaptive Neural Networks for Efficient Inference").

Before exit k+1 is computed, a decision function over exit k's confidence features says "exit
now" or "continue". The functions are learned bottom-up, from the last early exit to the first:
for each input the cost of exiting at k is its error there, the cost of continuing is the error
and extra MACs (times ``lam``, as a fraction of the full cost) of where the already-learned later
policies send it. Each function is a weighted binary classifier (label: the cheaper choice,
weight: the difference), chosen from logistic regression and the constant always/never functions.
"""
from __future__ import annotations

import numpy as np

from ..runtime.exit_rules import LinearPolicy
from .rules import ExitOutcome, first_exit, outcome

__all__ = ["fit_decision", "learn_policy", "apply_policy"]


def _weighted_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = 1e-3, iterations: int = 50) -> tuple[np.ndarray, float]:
    """Newton's method on the weighted, L2-regularised logistic loss; returns (weights, bias)."""
    design = np.concatenate([x, np.ones((len(x), 1))], 1)
    theta = np.zeros(design.shape[1])
    w = w / max(w.sum(), 1e-12)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ theta, -60, 60)))
        gradient = design.T @ (w * (p - y)) + l2 * np.r_[theta[:-1], 0.0]
        hessian = (design * (w * p * (1 - p))[:, None]).T @ design + l2 * np.eye(len(theta))
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return theta[:-1], float(theta[-1])


def fit_decision(features: np.ndarray, exit_better: np.ndarray, weight: np.ndarray) -> LinearPolicy:
    """The lowest weighted error among logistic regression and the two constant functions."""
    mean, std = features.mean(0), features.std(0) + 1e-9
    zeros = np.zeros(features.shape[1])
    candidates = [LinearPolicy(zeros, 60.0, mean, std), LinearPolicy(zeros, -60.0, mean, std)]
    if exit_better.any() and not exit_better.all():
        weights, bias = _weighted_logistic((features - mean) / std, exit_better.astype(np.float64), weight)
        candidates.append(LinearPolicy(weights, bias, mean, std))
    errors = [float((weight * ((c.exit_probability(features) >= 0.5) != exit_better)).sum()) for c in candidates]
    return candidates[int(np.argmin(errors))]


def apply_policy(policies: list[LinearPolicy], features: np.ndarray, correct: np.ndarray,
                 cumulative_macs: np.ndarray) -> ExitOutcome:
    """Exit where the first policy says so (``features``: ``[exits, samples, F]``)."""
    taken = np.stack([p.exit_probability(features[k]) >= 0.5 for k, p in enumerate(policies)]
                     + [np.ones(features.shape[1], bool)])
    return outcome(first_exit(taken), correct, cumulative_macs)


def learn_policy(features: np.ndarray, correct: np.ndarray, cumulative_macs: np.ndarray, lam: float) -> list[LinearPolicy]:
    """One policy per early exit, learned bottom-up; ``lam`` weighs cost (a fraction of the full
    network's MACs) against error."""
    exits, n = correct.shape
    cost = cumulative_macs / cumulative_macs[-1]
    error = 1.0 - correct.astype(np.float64)
    # where inputs end up if they continue past exit k: starts as "the last exit"
    destination = np.full(n, exits - 1)
    policies: list[LinearPolicy] = []
    for k in range(exits - 2, -1, -1):
        rows = np.arange(n)
        stay = error[k] + lam * cost[k]
        go = error[destination, rows] + lam * cost[destination]
        policy = fit_decision(features[k], stay <= go, np.abs(stay - go) + 1e-6)
        policies.insert(0, policy)
        destination = np.where(policy.exit_probability(features[k]) >= 0.5, k, destination)
    return policies
