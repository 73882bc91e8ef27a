"""SteppingNet construction and retraining (Sun et al., 2022), and the nested baselines.

- ``construct``: start from the original network expanded by a ratio, every neuron in the
  smallest subnet. Each iteration trains all subnets ``m`` batches (ascending, with learning-rate
  suppression), accumulates the importance ``M_j = sum_k alpha_k |dL_k/dr_j|`` of every neuron,
  updates the revivable magnitude-pruning masks, then moves the least important neurons whose
  MACs just exceed ``(P_t - P_1) / N_t`` from each subnet over its target to the next one (out of
  the last subnet = removed).
- ``fit``: training of any nested classifier with ``gamma * CE + (1 - gamma) * KL`` against a
  teacher, subnets in ascending order per batch, gradients of weights owned by a smaller subnet
  ``i`` scaled by ``beta^(j - i)`` while subnet ``j`` trains. Used for SteppingNet's retraining,
  the baselines (by default without teacher and suppression: plain cross-entropy per subnet;
  ``stepping_run --baseline-recipe stepping`` gives them SteppingNet's recipe) and, with one subnet
  and no teacher, the original network.

``SteppingConfig``'s defaults are the paper's formulation; ``our_options`` names the options of a
config that depart from it (the report labels every run with them).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm import tqdm

from ..nets.stepping import SCALE_AT, SteppingNet

__all__ = ["SteppingConfig", "RANKINGS", "PRUNE_RULES", "LEGACY_CONFIG", "our_options", "fit", "construct",
           "move_neurons", "update_pruning", "assign_regular_levels", "suppress_gradients", "scoped_weight_decay"]

Batches = Iterator[tuple[Tensor, Any]]
# (output of a subnet, labels, the teacher's output or None) -> loss
Loss = Callable[[Tensor, Any, "Tensor | None"], Tensor]


RANKINGS = ("importance", "layer_relative", "importance_per_mac")
# "absolute": prune |w| < threshold (the paper: 1e-5); "layer_mean": prune |w| < threshold x the
# layer's mean |w| (ours; the recorded runs used 0.05)
PRUNE_RULES = ("absolute", "layer_mean")


@dataclass
class SteppingConfig:
    """SteppingNet hyper-parameters; defaults are the paper's settings."""

    iterations: int = 300  # N_t
    batches_per_iteration: int = 250  # m
    alpha_growth: float = 1.5  # alpha_1 = 1, x1.5 per larger subnet
    beta: float = 0.9  # learning-rate suppression base
    gamma: float = 0.4  # CE weight in the distillation loss
    temperature: float = 1.0  # of the KL term
    prune_threshold: float = 1e-5  # the paper's; see ``prune_rule``
    prune_rule: str = "absolute"  # ``PRUNE_RULES``: threshold on |w| (the paper) or on |w| / mean |w| (ours)
    # the construction meets its MAC targets counting the pruned weights too (ours: what the dense
    # exported graphs execute); off = only the weights the masks keep (the paper's count)
    count_pruned_macs: bool = False
    # where the importance scale r multiplies (``nets.stepping.SCALE_AT``): the weighted sum, Eq. 1-2
    # (the paper), or the neuron's output after BN/ReLU/pooling (ours, the runs recorded before this option)
    scale_at: str = "weighted_sum"
    min_neurons: int = 1  # every subnet keeps at least this many neurons per layer
    # which neurons move first (``RANKINGS``): the least important (the paper), the least important
    # relative to the other candidates of the same layer, or the least important per MAC saved
    ranking: str = "importance"
    # a neuron may enter level k of a layer only while every later layer holds at least the same
    # share of its neurons at level k (``_can_move``), so no increment funnels its new features
    # through fewer downstream neurons than it adds upstream; off = the paper's construction
    funnel_free: bool = False
    # weight decay only on the weights of the subnet a step trains (``train_batch``): with one
    # optimizer step per subnet, unscoped decay shrinks a level-k weight at every step but trains it
    # at only the steps of subnets >= k, which starves the neurons moved up and kills them;
    # off = every step decays every weight (the runs recorded before this option)
    scoped_decay: bool = False
    # every subnet keeps at least as many neurons in the last hidden layer as the network has outputs,
    # so no subnet squeezes its outputs (a detector's 8 head maps) through fewer channels;
    # off = only ``min_neurons`` (the runs recorded before this option)
    full_rank_output: bool = False
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        for name, allowed in (("ranking", RANKINGS), ("prune_rule", PRUNE_RULES), ("scale_at", SCALE_AT)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


# what the runs recorded before these fields existed used (their result.json configs lack them)
LEGACY_CONFIG = {"prune_rule": "layer_mean", "prune_threshold": 0.05, "count_pruned_macs": True, "scale_at": "output"}
_RANKING_OPTIONS = {"importance_per_mac": "per-MAC ranking", "layer_relative": "within-layer ranking"}


def our_options(config: dict) -> list[str]:
    """Names of the options of ``config`` (``asdict(SteppingConfig)``, possibly recorded before some
    fields existed: those get ``LEGACY_CONFIG``) that depart from the paper's formulation; empty = the
    paper's. LR suppression off (``beta`` = 1) and KD off are ablations, named by the caller."""
    c = {**asdict(SteppingConfig()), **LEGACY_CONFIG, **config}
    paper = SteppingConfig()
    names = [_RANKING_OPTIONS[c["ranking"]]] if c["ranking"] != "importance" else []
    names += [name for key, name in (("funnel_free", "funnel-free"), ("scoped_decay", "scoped decay"),
                                     ("full_rank_output", "full-rank output")) if c[key]]
    if c["scale_at"] != paper.scale_at:
        names.append("r after BN/ReLU/pool")
    if c["prune_rule"] == "layer_mean":
        names.append(f"pruning {c['prune_threshold']:g} x mean abs(w)")
    elif c["prune_threshold"] != paper.prune_threshold:
        names.append(f"pruning abs(w) < {c['prune_threshold']:g}")
    if c["count_pruned_macs"]:
        names.append("pruned weights' MACs counted")
    names += [f"{key} {c[key]:g}" for key in ("alpha_growth", "gamma", "temperature") if c[key] != getattr(paper, key)]
    return names


def make_optimizer(model: nn.Module, cfg: SteppingConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum; with ``cfg.scoped_decay`` the weights that have owner levels
    (``weight_owners``) get their decay from ``scoped_weight_decay`` instead of the optimizer."""
    scoped = {id(p) for p, _ in model.weight_owners()} if cfg.scoped_decay else set()
    groups = [{"params": [p for p in model.parameters() if id(p) not in scoped]},
              {"params": [p for p in model.parameters() if id(p) in scoped], "weight_decay": 0.0}]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, nesterov=True)


def scoped_weight_decay(owners: list[tuple[nn.Parameter, Tensor]], subnet: int, weight_decay: float) -> None:
    """Add the decay term ``weight_decay * w`` to the gradient of the weights subnet ``subnet`` uses
    (owner level ``<= subnet``) and to no other."""
    for param, owner in owners:
        if param.grad is not None:
            param.grad.add_(param.detach() * (owner <= subnet), alpha=weight_decay)


def distillation_loss(logits: Tensor, labels: Tensor, teacher: Tensor | None, gamma: float,
                      temperature: float) -> Tensor:
    """``gamma * CE + (1 - gamma) * KL(teacher || student)``; plain CE without a teacher."""
    ce = F.cross_entropy(logits, labels)
    if teacher is None:
        return ce
    t = temperature
    kl = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher / t, 1), log_target=True,
                  reduction="batchmean") * t * t
    return gamma * ce + (1 - gamma) * kl


def suppress_gradients(owners: list[tuple[nn.Parameter, Tensor]], subnet: int, beta: float) -> None:
    """Scale the gradient of every weight owned by subnet ``i < subnet`` by ``beta^(subnet - i)``."""
    if beta == 1.0:
        return
    for param, owner in owners:
        if param.grad is not None:
            param.grad.mul_(torch.pow(beta, (subnet - owner).clamp(min=0).to(param.grad.dtype)))


def train_batch(model: nn.Module, optimizer: torch.optim.Optimizer, images: Tensor, labels: Any, loss_fn: Loss,
                cfg: SteppingConfig, teacher: nn.Module | None, beta: float,
                importance: list[Tensor] | None = None) -> list[float]:
    """One batch for every subnet in ascending order; returns the subnet losses.

    With ``importance`` (one tensor per hidden layer) the per-neuron importance
    ``alpha_k |dL_k / dr_j|`` is accumulated into it (SteppingNet construction).
    """
    with torch.no_grad():
        target = teacher(images) if teacher is not None else None
    owners = model.weight_owners()
    losses = []
    for subnet in range(model.num_subnets):
        scales = ([torch.ones(w, requires_grad=True) for w in model.widths] if importance is not None else None)
        logits = model(images, subnet, scales, cfg.scale_at) if scales is not None else model(images, subnet)
        loss = loss_fn(logits, labels, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.scoped_decay:
            scoped_weight_decay(owners, subnet, cfg.weight_decay)
        suppress_gradients(owners, subnet, beta)
        optimizer.step()
        losses.append(loss.item())
        if importance is not None:
            alpha = cfg.alpha_growth ** subnet
            for acc, r in zip(importance, scales):
                if r.grad is not None:
                    acc.add_(alpha * r.grad.abs())
    return losses


def fit(model: nn.Module, data: Batches, loss_fn: Loss, steps: int, cfg: SteppingConfig,
        teacher: nn.Module | None = None,
        beta: float | None = None, start_step: int = 0, optimizer: torch.optim.Optimizer | None = None,
        on_epoch: Callable[[int, torch.optim.Optimizer], None] | None = None, steps_per_epoch: int = 0,
        desc: str = "fit") -> torch.optim.Optimizer:
    """Train ``model`` for ``steps`` batches with cosine LR; ``on_epoch(step, optimizer)`` checkpoints."""
    optimizer = optimizer or make_optimizer(model, cfg)
    beta = cfg.beta if beta is None else beta
    if teacher is not None:
        teacher.eval()
    bar = tqdm(range(start_step, steps), initial=start_step, total=steps, desc=desc, mininterval=5)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        model.train()
        images, labels = next(data)
        losses = train_batch(model, optimizer, images, labels, loss_fn, cfg, teacher, beta)
        bar.set_postfix({f"L{k}": f"{v:.2f}" for k, v in enumerate(losses)}, refresh=False)
        if on_epoch is not None and steps_per_epoch and ((step + 1) % steps_per_epoch == 0 or step + 1 == steps):
            on_epoch(step + 1, optimizer)
    return optimizer


def update_pruning(model: SteppingNet, threshold: float, rule: str = "absolute") -> float:
    """Recompute the magnitude-pruning masks (revivable: weights keep training); returns sparsity.

    ``rule`` (``PRUNE_RULES``): prune ``|w| < threshold`` ("absolute", the paper's, with 1e-5) or
    ``|w| < threshold x mean |w|`` of the layer ("layer_mean", ours).
    """
    if rule not in PRUNE_RULES:
        raise ValueError(f"rule must be one of {PRUNE_RULES}, got {rule!r}")
    pruned = total = 0
    with torch.no_grad():
        for l, layer in enumerate(model.weighted_layers):
            magnitude = layer.weight.abs()
            mask = magnitude >= (threshold * magnitude.mean() if rule == "layer_mean" else threshold)
            model.prune_mask(l).copy_(mask)
            pruned += int((~mask).sum())
            total += mask.numel()
    return pruned / total


def _over_target(model: SteppingNet, i: int, targets: list[int], count_pruned: bool = True) -> bool:
    """Subnet ``i`` must shed neurons: above its target, and (for i > 0) with a surplus over
    subnet ``i - 1`` larger than the targets' gap (MACs: ``SteppingNet.macs(., count_pruned)``)."""
    macs = model.macs(i, count_pruned)
    if macs <= targets[i]:
        return False
    return i == 0 or macs - model.macs(i - 1, count_pruned) > targets[i] - targets[i - 1]


def _move_saving(model: SteppingNet, l: int, j: int, i: int, count_pruned: bool = True) -> int:
    """MACs subnet ``i`` saves if neuron ``j`` of layer ``l`` moves from level ``i`` to ``i + 1``."""
    before, levels = model.macs(i, count_pruned), model.levels(l).clone()
    levels[j] = i + 1
    model.set_levels(l, levels)
    saving = before - model.macs(i, count_pruned)
    levels[j] = i
    model.set_levels(l, levels)
    return saving


def _floor(floor: "int | Sequence[int]", i: int) -> int:
    """What subnet ``i`` keeps of a layer under ``floor`` (one number for every subnet, or one each)."""
    return floor if isinstance(floor, int) else int(floor[i])


def _can_move(counts: Tensor, l: int, i: int, min_neurons: "int | Sequence[int]", funnel_free: bool = False) -> bool:
    """Whether a level-``i`` neuron of layer ``l`` may move to level ``i + 1`` (``counts``:
    ``SteppingNet.level_counts``): subnet ``i`` keeps ``min_neurons`` in the layer, and no neuron
    becomes idle (``SteppingNet.idle_neurons``): the move neither takes the last level-``i`` neuron
    from a layer that earlier level-``i`` neurons feed through, nor puts the neuron into a level that
    some later layer lacks (out of the last subnet = removed, always connected). With
    ``funnel_free`` every later layer must also hold at least the share of its neurons at level
    ``i + 1`` that layer ``l`` holds after the move."""
    if int(counts[l, : i + 1].sum()) <= _floor(min_neurons, i):
        return False
    if int(counts[l, i]) == 1 and bool((counts[:l, i] > 0).any()):
        return False
    removed = counts.shape[1] - 1
    if i + 1 == removed:
        return True
    later = counts[l + 1:, i + 1]
    if funnel_free:
        share = (counts[l, i + 1] + 1) / counts[l].sum()
        return bool((later / counts[l + 1:].sum(1) >= share).all())
    return bool((later > 0).all())


def _pick(model: SteppingNet, ranked: list[tuple[float, int, int]], i: int, target: int,
          min_neurons: list, funnel_free: bool, count_pruned: bool = True) -> int | None:
    """Index in ``ranked`` (``_ranked``, ascending) of the next neuron to move out of subnet ``i``:
    the least important allowed one (``_can_move``) whose saving keeps the subnet at or above
    ``target``; if every allowed move goes below it, the one that saves least (the subnet lands
    just under its target instead of a whole first-layer channel under it). None if none is allowed.
    With ``funnel_free``, a funnel-free move if there is one, else any connected one: later layers
    that have passed their neurons on to larger subnets must not stop the construction."""
    counts = model.level_counts()
    excess = model.macs(i, count_pruned) - target
    for rule in ((True, False) if funnel_free else (False,)):
        savings: dict[int, int] = {}
        for k, (_, l, j) in enumerate(ranked):
            if _can_move(counts, l, i, min_neurons[l], rule):
                savings[k] = _move_saving(model, l, j, i, count_pruned)
                if savings[k] <= excess:
                    return k
        if savings:
            return min(savings, key=savings.__getitem__)
    return None


def _ranked(model: SteppingNet, importance: list[Tensor], i: int, ranking: str,
            min_neurons: list, count_pruned: bool = True) -> list[tuple[float, int, int]]:
    """(score, layer, neuron) of the level-``i`` neurons that may leave subnet ``i``, ascending.

    ``importance``: the paper's ``M_j``. ``layer_relative``: ``M_j`` over the mean ``M`` of the
    layer's level-``i`` neurons, so layers shrink by their own spread of importance instead of by
    their scale (a conv channel sums its importance over every position, an FC unit has one).
    ``importance_per_mac``: ``M_j`` over the MACs the move saves.
    """
    ranked = []
    for l in range(model.num_hidden):
        if int((model.levels(l) <= i).sum()) <= _floor(min_neurons[l], i):
            continue
        idx = torch.nonzero(model.levels(l) == i).squeeze(1)
        scores = importance[l][idx]
        if ranking == "layer_relative":
            scores = scores / scores.mean().clamp(min=1e-12)
        elif ranking == "importance_per_mac":
            scores = scores / torch.tensor([max(1, _move_saving(model, l, int(j), i, count_pruned)) for j in idx])
        elif ranking != "importance":
            raise ValueError(f"ranking must be one of {RANKINGS}, got {ranking!r}")
        ranked += [(float(v), l, int(j)) for v, j in zip(scores, idx)]
    return sorted(ranked)


def move_neurons(model: SteppingNet, importance: list[Tensor], targets: list[int], chunk: float,
                 min_neurons: int | list = 1, ranking: str = "importance", funnel_free: bool = False,
                 count_pruned: bool = True) -> int:
    """Move the least important neurons (MACs just over ``chunk``) out of every subnet over its target.

    Subnets are visited from the largest down, so a neuron moves at most one level per call;
    moving out of the last subnet removes the neuron. Neurons are ranked by ``ranking`` (one of
    ``RANKINGS``, see ``_ranked``). Only moves that keep every subnet's new neurons connected to its
    output are made (``_can_move``; with ``funnel_free`` also only moves that keep every later layer
    at least as wide, in share, at the destination level), so each increment pays only for neurons
    that change its output; near its target a subnet skips neurons that would take it below the
    target (``_pick``).
    ``min_neurons``: what every subnet keeps per hidden layer: one number, or one entry per layer
    (a number, or one number per subnet: per-layer floors).
    ``count_pruned``: MACs of pruned weights count towards the targets (``SteppingNet.macs``).
    Returns the number of neurons moved.
    """
    if isinstance(min_neurons, int):
        min_neurons = [min_neurons] * model.num_hidden
    moved = 0
    for i in reversed(range(model.num_subnets)):
        if not _over_target(model, i, targets, count_pruned):
            continue
        ranked = _ranked(model, importance, i, ranking, min_neurons, count_pruned)
        start = model.macs(i, count_pruned)
        while start - model.macs(i, count_pruned) < chunk and _over_target(model, i, targets, count_pruned):
            pick = _pick(model, ranked, i, targets[i], min_neurons, funnel_free, count_pruned)
            if pick is None:
                break
            _, l, j = ranked.pop(pick)
            levels = model.levels(l).clone()
            levels[j] = i + 1
            model.set_levels(l, levels)
            moved += 1
    return moved


def construct(model: SteppingNet, data: Batches, loss_fn: Loss, targets: list[int], cfg: SteppingConfig,
              start_iteration: int = 0, optimizer: torch.optim.Optimizer | None = None,
              on_iteration: Callable[[int, torch.optim.Optimizer], None] | None = None) -> torch.optim.Optimizer:
    """SteppingNet construction until every subnet meets its MAC target (``targets`` ascending).

    ``model`` is the expanded network; on a fresh start every neuron is in subnet 0.
    """
    optimizer = optimizer or make_optimizer(model, cfg)
    expanded_total = SteppingNet(model.spec, 1).macs(0)  # P_t: the whole expanded network
    chunk = (expanded_total - targets[0]) / cfg.iterations
    importance = [torch.zeros(w) for w in model.widths]
    floors = [cfg.min_neurons] * model.num_hidden
    if cfg.full_rank_output:
        floors[-1] = max(cfg.min_neurons, model.spec.num_classes)
    bar = tqdm(range(start_iteration, cfg.iterations), initial=start_iteration, total=cfg.iterations,
               desc="construct", mininterval=5)
    for iteration in bar:
        importance = [torch.zeros(w) for w in model.widths]
        model.train()
        for _ in range(cfg.batches_per_iteration):
            images, labels = next(data)
            train_batch(model, optimizer, images, labels, loss_fn, cfg, None, cfg.beta, importance)
        sparsity = update_pruning(model, cfg.prune_threshold, cfg.prune_rule)
        move_neurons(model, importance, targets, chunk, floors, cfg.ranking, cfg.funnel_free, cfg.count_pruned_macs)
        bar.set_postfix({"MACs": "/".join(f"{model.macs(i, cfg.count_pruned_macs) / targets[i]:.2f}"
                                          for i in range(model.num_subnets)),
                         "sparsity": f"{sparsity:.2f}"}, refresh=False)
        if on_iteration is not None:
            on_iteration(iteration + 1, optimizer)
    # targets not reached within N_t iterations: keep moving by the last importance, no training
    while any(_over_target(model, i, targets, cfg.count_pruned_macs) for i in range(model.num_subnets)):
        if move_neurons(model, importance, targets, chunk, floors, cfg.ranking, cfg.funnel_free,
                        cfg.count_pruned_macs) == 0:
            break
    return optimizer


def assign_regular_levels(model: SteppingNet, targets: list[int]) -> None:
    """Any-width nesting: the same leading fraction of every layer per subnet, fit to ``targets``.

    Channels past the last subnet's fraction are removed.
    """
    fractions: list[float] = []

    def apply(fracs: list[float]) -> None:
        for l, width in enumerate(model.widths):
            bounds = torch.tensor([max(1, round(f * width)) for f in fracs])
            levels = torch.searchsorted(bounds, torch.arange(width), right=True)
            model.set_levels(l, levels.clamp(max=model.num_subnets))

    for i, target in enumerate(targets):
        lo, hi = fractions[-1] if fractions else 0.0, 1.0
        for _ in range(30):
            mid = (lo + hi) / 2
            apply(fractions + [mid] * (model.num_subnets - i))
            lo, hi = (mid, hi) if model.macs(i) <= target else (lo, mid)
        fractions.append(lo)
    apply(fractions)
