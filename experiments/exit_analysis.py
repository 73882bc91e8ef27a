"""Accuracy-vs-MACs of exit rules on a trained early-exit network: thresholds (and learned
policies) are tuned on the calibration half of the test split and measured on the other half.

Decision gates are scored both ways from the same gates (``distance_raw``: ``max_c f_c``, the
paper's Algorithm 1; ``distance_normalised``: ``max_c f_c / ||w_c||``, ours), whatever score the
checkpoint's own graph outputs. Thresholds are tuned per exit or as one T for all exits
(``threshold_curve(mode=...)``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from anytime_perception.calibration.calibrate import ExitRecords, policy_features, rule_matrix
from anytime_perception.calibration.policy import apply_policy, learn_policy
from anytime_perception.calibration.rules import apply_thresholds, soft_oracle, tune_thresholds
from anytime_perception.data.image_folder import ImageSet
from anytime_perception.nets.early_exit import EarlyExitNet
from anytime_perception.training.early_exits import exit_outputs

__all__ = ["Point", "records_of", "threshold_curve", "fixed_points", "policy_curve", "oracle_point", "macs_at_accuracy",
           "DROPS", "LAMBDAS"]

DROPS = tuple(np.round(np.linspace(0.0, 0.10, 41), 4))  # accuracy-drop targets of the curves
LAMBDAS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2, 2.0, 4.0)  # cost weights of the policy curve


@dataclass(frozen=True)
class Point:
    """One operating point measured on the evaluation half."""

    setting: float  # the accuracy-drop target or lambda it was tuned for
    accuracy: float
    macs_fraction: float  # mean MACs over the backbone's
    exit_share: tuple[float, ...]


def records_of(net: EarlyExitNet, images: ImageSet, mean: tuple[float, ...], std: tuple[float, ...],
               stage_macs: list[int]) -> ExitRecords:
    """Exit outputs of ``net`` (torch) on ``images`` normalised like its training data."""
    x = torch.from_numpy(images.images).permute(0, 3, 1, 2).float().div(255.0)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    logits, confidence = exit_outputs(net, x)  # [exits, N, C], [exits, N]
    if net.kind == "branch":
        confidences = {"confidence": confidence[:-1].numpy()}
    else:
        norms = torch.stack([head.linear.weight.detach().norm(dim=1) for head in net.heads])  # [exits - 1, C]
        early = logits[:-1]
        confidences = {"distance_raw": early.max(2).values.numpy(),
                       "distance_normalised": (early / norms[:, None, :].clamp_min(1e-12)).max(2).values.numpy()}
    return ExitRecords(logits.numpy(), confidences, images.labels, np.asarray(stage_macs))


def _point(setting: float, outcome, backbone_macs: float) -> Point:
    return Point(float(setting), outcome.accuracy, outcome.mean_macs / backbone_macs, outcome.exit_share)


def threshold_curve(rule: str, calibration: ExitRecords, evaluation: ExitRecords, backbone_macs: float,
                    drops: tuple[float, ...] = DROPS, mode: str = "per_exit") -> list[Point]:
    """Thresholds tuned on ``calibration`` (``mode``: ``per_exit`` or ``single``) for each
    accuracy-drop target, measured on ``evaluation``."""
    cal_scores, eval_scores = rule_matrix(rule, calibration), rule_matrix(rule, evaluation)
    final = float(calibration.correct[-1].mean())
    points = []
    for drop in drops:
        t = tune_thresholds(mode, cal_scores, calibration.correct, calibration.cumulative_macs, final - drop)
        points.append(_point(drop, apply_thresholds(eval_scores, t, evaluation.correct, evaluation.cumulative_macs),
                             backbone_macs))
    return points


def fixed_points(rule: str, evaluation: ExitRecords, backbone_macs: float,
                 thresholds: tuple[float, ...]) -> list[Point]:
    """``rule`` with the same fixed threshold at every exit (no tuning), one point per value: how
    a paper's reported thresholds behave on these exits."""
    scores = rule_matrix(rule, evaluation)
    exits = scores.shape[0] - 1
    return [_point(t, apply_thresholds(scores, np.full(exits, t), evaluation.correct, evaluation.cumulative_macs),
                   backbone_macs) for t in thresholds]


def policy_curve(calibration: ExitRecords, evaluation: ExitRecords, backbone_macs: float,
                 lambdas: tuple[float, ...] = LAMBDAS) -> list[Point]:
    """Bolukbasi policies learned on ``calibration`` for each cost weight, measured on ``evaluation``."""
    cal_features, eval_features = policy_features(calibration), policy_features(evaluation)
    points = []
    for lam in lambdas:
        policies = learn_policy(cal_features, calibration.correct, calibration.cumulative_macs, lam)
        points.append(_point(lam, apply_policy(policies, eval_features, evaluation.correct, evaluation.cumulative_macs),
                             backbone_macs))
    return points


def oracle_point(evaluation: ExitRecords, backbone_macs: float) -> Point:
    return _point(0.0, soft_oracle(evaluation.correct, evaluation.cumulative_macs), backbone_macs)


def macs_at_accuracy(points: list[Point], accuracy: float) -> float | None:
    """The fewest MACs (fraction) among points reaching ``accuracy``; None if none does."""
    reached = [p.macs_fraction for p in points if p.accuracy >= accuracy - 1e-12]
    return min(reached) if reached else None
