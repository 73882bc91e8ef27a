"""Network selection over a cascade of pre-trained classifiers (Bolukbasi et al., 2017,
"Adaptive Neural Networks for Efficient Inference": network selection, Fig. 2 left).

Networks ``0 .. K-1`` of rising cost; network 0 always runs. After network ``k < K-1`` a policy
decides: return its answer, evaluate the next network ``k+1``, or jump to the last network ``K-1``
(skipping those in between; at ``k = K-2`` next and last coincide). A frame's path is the set of
networks it evaluated, its cost the sum of their MACs (not a cumulative stage cost: a jump pays
for the little and the big network only), its answer that of the last network on the path. For
three networks the paths are little, little->middle, little->big and little->middle->big.

The decisions are learned bottom-up, last network first, each as a weighted binary classification
(``policy.fit_decision``: weighted logistic regression or a constant always/never function) over
the confidence features of every network evaluated so far: with ``lam`` weighing MACs (a fraction
of the last network's) against the 0/1 error, an input that reaches network k and continues costs
what the already-learned later decisions make of it. The three-way decision after network k is
two binary ones: first, among continuing inputs, next vs jump (trained first, it lies deeper in the
tree), then return vs continue to where that choice sends the input.

The soft oracle (``soft_oracle``, a bound for the policies) knows the labels. ``paper`` (the
default) is Bolukbasi et al.'s: it follows the cascade's paths, paying for every network it
evaluates, and "can exit at a cheaper model only if all the latter models agree with the true
label", which "prevent[s] the oracle from correcting mistakes made by the complex networks": an
input the last network gets wrong goes to it by the cheapest path and keeps its error, so the
oracle's accuracy is the last network's. ``any_correct`` (our option, the oracle of our first
tables) takes the cheapest path whose answer is right, wherever that is, and so also fixes the
last network's errors: an upper bound, not a speed-up at equal accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..runtime.exit_rules import LinearPolicy, confidence_features, rule_scores
from .policy import fit_decision
from .rules import first_exit

__all__ = ["CascadeRecords", "CascadeOutcome", "CascadePolicy", "cascade_records", "paths", "path_outcome",
           "learn_cascade", "apply_cascade", "myopic", "soft_oracle", "ORACLES", "rises"]

DECIDE = 0.5  # a policy's probability at or above which it takes its action
ORACLES = ("paper", "any_correct")  # soft-oracle rules: Bolukbasi et al.'s (default), ours


@dataclass(frozen=True)
class CascadeRecords:
    """Every network's outputs on one labelled set."""

    correct: np.ndarray  # [K, N] bool: network k's answer is right
    features: np.ndarray  # [K, N, F] confidence features of each network (top-1, top-2, negative entropy)
    msp: np.ndarray  # [K, N] max softmax probability
    macs: np.ndarray  # [K] MACs of evaluating each network once

    def history(self, k: int) -> np.ndarray:
        """What is known after network k: the features of networks ``0 .. k``, ``[N, (k+1) * F]``."""
        return self.features[: k + 1].transpose(1, 0, 2).reshape(self.correct.shape[1], -1)  # [N, (k+1) F]


def cascade_records(logits: list[np.ndarray], labels: np.ndarray, macs: list[int] | np.ndarray) -> CascadeRecords:
    """Records from each network's logits (``[N, C]`` each, networks by rising cost) and MACs."""
    macs = np.asarray(macs, dtype=np.float64)
    if len(logits) < 2 or len(logits) != len(macs):
        raise ValueError(f"a cascade needs two or more networks with one MAC count each, got {len(logits)} logits "
                         f"and {len(macs)} MAC counts")
    if (np.diff(macs) <= 0).any():
        raise ValueError(f"networks must be given in order of rising MACs, got {[int(m) for m in macs]}")
    stacked = np.stack([np.asarray(x, dtype=np.float64) for x in logits])  # [K, N, C]
    return CascadeRecords(stacked.argmax(-1) == np.asarray(labels)[None], confidence_features(stacked),
                          rule_scores("msp", stacked), macs)


@dataclass(frozen=True)
class CascadeOutcome:
    """Which networks each input evaluated, which one answered, and what that achieved."""

    evaluated: np.ndarray  # [K, N] bool
    answer: np.ndarray  # [N] index of the answering network (the last one evaluated)
    accuracy: float
    mean_macs: float
    answer_share: tuple[float, ...]  # share of inputs answered by each network
    path_share: dict[str, float]  # share of inputs per path, e.g. "0>2" (little, then big)


def _outcome(evaluated: np.ndarray, records: CascadeRecords) -> CascadeOutcome:
    k, n = evaluated.shape
    answer = k - 1 - evaluated[::-1].argmax(0)  # the last evaluated network
    patterns, counts = np.unique(evaluated.T, axis=0, return_counts=True)
    shares = {">".join(str(i) for i in np.flatnonzero(p)): float(c / n) for p, c in zip(patterns, counts)}
    return CascadeOutcome(evaluated, answer, float(records.correct[answer, np.arange(n)].mean()),
                          float((records.macs @ evaluated).mean()),
                          tuple(float(s) for s in np.bincount(answer, minlength=k) / n), shares)


def paths(networks: int) -> list[tuple[int, ...]]:
    """Every path of the cascade: from network 0, at each k < K-1 return, go next or jump to the last."""
    last = networks - 1

    def from_(path: tuple[int, ...]) -> list[tuple[int, ...]]:
        k = path[-1]
        if k == last:
            return [path]
        steps = [k + 1] if k + 1 == last else [k + 1, last]
        return [path] + [p for step in steps for p in from_(path + (step,))]

    return from_((0,))


def path_outcome(records: CascadeRecords, path: tuple[int, ...]) -> CascadeOutcome:
    """Every input takes ``path`` (e.g. ``(K-1,)``: always the big network alone)."""
    evaluated = np.zeros(records.correct.shape, bool)
    evaluated[list(path)] = True
    return _outcome(evaluated, records)


@dataclass(frozen=True)
class CascadePolicy:
    """The decisions after each network but the last: ``stop[k]`` returns network k's answer;
    ``jump[k]``, for inputs that go on, jumps to the last network instead of the next one (None
    where the next network is the last). Both read ``CascadeRecords.history(k)``."""

    stop: tuple[LinearPolicy, ...]
    jump: tuple[LinearPolicy | None, ...]

    def to_dict(self) -> dict:
        return {"stop": [p.to_dict() for p in self.stop],
                "jump": [None if p is None else p.to_dict() for p in self.jump]}


def _fit(features: np.ndarray, take_cost: np.ndarray, other_cost: np.ndarray) -> tuple[LinearPolicy, np.ndarray]:
    """A decision taking an action where that is no costlier, and where it takes it."""
    policy = fit_decision(features, take_cost <= other_cost, np.abs(take_cost - other_cost) + 1e-6)
    return policy, policy.exit_probability(features) >= DECIDE


def learn_cascade(records: CascadeRecords, lam: float) -> CascadePolicy:
    """Policies learned bottom-up on ``records``; ``lam`` weighs MACs (a fraction of the last
    network's) against the 0/1 error."""
    networks, n = records.correct.shape
    last = networks - 1
    error = 1.0 - records.correct.astype(np.float64)
    cost = lam * records.macs / records.macs[-1]
    # loss of an input arriving at network k and following the learned decisions from there on
    arriving = error[last] + cost[last]
    to_last = arriving
    stops: list[LinearPolicy] = []
    jumps: list[LinearPolicy | None] = []
    for k in range(last - 1, -1, -1):
        features = records.history(k)
        go = arriving  # continue to network k + 1
        jump = None
        if k + 1 < last:
            jump, jumping = _fit(features, to_last, arriving)
            go = np.where(jumping, to_last, arriving)
        stop, stopping = _fit(features, error[k], go)
        stops.insert(0, stop)
        jumps.insert(0, jump)
        arriving = cost[k] + np.where(stopping, error[k], go)
    return CascadePolicy(tuple(stops), tuple(jumps))


def apply_cascade(policy: CascadePolicy, records: CascadeRecords) -> CascadeOutcome:
    """Run the learned decisions on ``records``."""
    networks, n = records.correct.shape
    evaluated = np.zeros((networks, n), bool)
    going = np.ones(n, bool)  # inputs reaching network k along 0 -> 1 -> ... -> k
    for k, (stop, jump) in enumerate(zip(policy.stop, policy.jump)):
        evaluated[k] = going
        features = records.history(k)
        going = going & (stop.exit_probability(features) < DECIDE)
        if jump is not None:
            jumping = going & (jump.exit_probability(features) >= DECIDE)
            evaluated[-1] |= jumping
            going = going & ~jumping
    evaluated[-1] |= going
    return _outcome(evaluated, records)


def myopic(records: CascadeRecords, threshold: float) -> CascadeOutcome:
    """One max-softmax threshold for every network: return at the first network whose MSP reaches
    it (the last one answers otherwise); no jumps."""
    answer = first_exit(records.msp >= threshold)
    return _outcome(np.arange(len(records.macs))[:, None] <= answer[None], records)


def soft_oracle(records: CascadeRecords, rule: str = "paper") -> CascadeOutcome:
    """Per input the cheapest cascade path allowed to answer it (``rule``, one of ``ORACLES``).

    ``paper``: a path may end at network k only if networks ``k .. K-1`` are all right; inputs the
    last network gets wrong take the cheapest path to it. ``any_correct``: the cheapest path whose
    answer is right (the cheapest path if none is)."""
    if rule not in ORACLES:
        raise ValueError(f"unknown soft-oracle rule {rule!r}; known: {', '.join(ORACLES)}")
    options = paths(len(records.macs))
    masks = np.zeros((len(options), len(records.macs)), bool)  # [P, K]
    for i, path in enumerate(options):
        masks[i, list(path)] = True
    cost = masks @ records.macs  # [P]
    ends = [p[-1] for p in options]
    if rule == "paper":
        # all later networks right: reverse cumulative AND over the networks, [K, N]
        allowed_end = np.logical_and.accumulate(records.correct[::-1], axis=0)[::-1]
        allowed = allowed_end[ends] | (np.asarray(ends) == len(records.macs) - 1)[:, None]  # [P, N]
    else:
        right = records.correct[ends]  # [P, N]
        allowed = np.where(right.any(0), right, True)
    choice = np.where(allowed, cost[:, None], np.inf).argmin(0)
    return _outcome(masks[choice].T, records)


def rises(accuracy: np.ndarray | list[float], macs: np.ndarray | list[float]) -> bool:
    """Whether the cascade's networks rise in cost and in accuracy (each strictly above the one
    before): only then is the last network the most accurate and a speed-up against it one at
    the best accuracy the cascade holds."""
    accuracy, macs = np.asarray(accuracy, float), np.asarray(macs, float)
    return bool((np.diff(macs) > 0).all() and (np.diff(accuracy) > 0).all())
