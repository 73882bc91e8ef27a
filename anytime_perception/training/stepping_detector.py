"""SteppingNet on the detector training path (``train.py``, a family with levels such as
``stepping_centernet_patch_s3``): learning-rate suppression on AdamW's update, the construction
that moves neurons to later stages, and the construction rules.

- ``SuppressedUpdate``: per batch, one forward pass of every stage; then, for each stage ``j`` in
  ascending order, the gradient of stage ``j``'s loss alone and one optimizer step whose *update*
  (not gradient: AdamW normalises a scaled gradient away) is multiplied by ``beta^(j - i)`` for
  the weights owned by stage ``i <= j`` and by 0 for weights stage ``j`` does not use (the paper's
  suppression, Sun et al. Section III-A2, applied to AdamW).
- ``construct``: the paper's flow (Fig. 3) for ``iterations`` x ``batches`` batches: train every
  stage, accumulate the importance ``M_j = sum_k alpha_k |dL_k / dr_j|``, then move the least
  important neurons (MACs just over ``(P_t - P_1) / N_t``) out of every stage over its MAC target
  (``training.stepping.move_neurons``, shared with the classifiers).

Construction rules (``RULES``):
- ``paper``: neurons ranked by importance alone; every stage keeps at least one neuron per layer.
- ``floors``: ranked by importance per MAC saved, with per-layer floors: stage ``i`` keeps at least
  ``floor`` x the any-width detector's share of every layer (``layer_floors``). Ranked per MAC
  alone, the construction empties the stride-4 layers, the most expensive per neuron, which
  small road signs need (``docs/results/steppingnet.md``, Detector).
Both keep the last hidden layer pinned to the stage heads' widths (``nets.stepping_centernet``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from .stepping import move_neurons

__all__ = ["RULES", "SteppingOptions", "SuppressedUpdate", "construct", "layer_floors", "parse_targets",
           "is_stepping"]

RULES = ("paper", "floors")
ANY_WIDTH_SHARES = (0.2, 0.5, 1.0)  # cumulative share of every layer per stage in the shipped detector


@dataclass(frozen=True)
class SteppingOptions:
    """The SteppingNet settings of a detector run (``TrainConfig``'s ``stepping_*`` fields)."""

    targets: tuple[int, ...]  # cumulative MACs per stage
    iterations: int = 40  # N_t (the paper: 300)
    batches: int = 8  # m, training batches per iteration (the paper: 100-250)
    beta: float = 0.9  # learning-rate suppression base (the paper's)
    alpha_growth: float = 1.5  # alpha_k = 1.5^k (the paper's)
    rule: str = "paper"  # RULES
    floor: float = 0.75  # ``floors`` rule: fraction of the any-width share every stage keeps per layer

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"stepping rule must be one of {RULES}, got {self.rule!r}")
        if not 0.0 < self.beta <= 1.0:
            raise ValueError(f"suppression beta must be in (0, 1], got {self.beta}")
        if list(self.targets) != sorted(self.targets) or len(set(self.targets)) != len(self.targets):
            raise ValueError(f"MAC targets must rise stage by stage, got {list(self.targets)}")


def is_stepping(model: nn.Module) -> bool:
    """Whether ``model`` is a SteppingNet family (neurons with levels; ``nets.stepping_centernet``)."""
    return hasattr(model, "set_levels") and hasattr(model, "weight_owners")


def parse_targets(text: str, model_dir_reader: Callable[[str], list[int]]) -> tuple[int, ...]:
    """Cumulative MAC targets from ``--stepping-targets``: comma-separated numbers, or a model
    directory whose stages' MACs (``model_dir_reader``) give them."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return tuple(int(float(p)) for p in parts)
    except ValueError:
        pass
    macs = model_dir_reader(text)
    return tuple(int(sum(macs[: k + 1])) for k in range(len(macs)))


def layer_floors(model: nn.Module, floor: float) -> list[list[int]]:
    """Per layer and stage, the neurons the stage keeps under the ``floors`` rule: ``floor`` x the
    any-width detector's cumulative share of the layer's original width (at least 1); the pinned
    neck keeps all of its neurons."""
    floors = []
    for l, layer in enumerate(model.layout):
        if l == model.neck_index:
            floors.append(_pinned_neck(model))
            continue
        width = model.config.layer_width(layer, expanded=False)
        floors.append([max(1, math.ceil(floor * share * width)) for share in ANY_WIDTH_SHARES[: model.num_subnets]])
    return floors


def _pinned_neck(model: nn.Module) -> list[int]:
    """Floors that keep the neck as it is: every stage keeps all of its neck neurons."""
    counts = torch.bincount(model.levels(model.neck_index), minlength=model.num_subnets)[: model.num_subnets]
    return [int(c) for c in counts.cumsum(0)]


def _minimum_floors(model: nn.Module) -> list:
    """The ``paper`` rule's floors: one neuron per layer and stage, the neck pinned."""
    floors: list = [1] * model.num_hidden
    floors[model.neck_index] = _pinned_neck(model)
    return floors


class SuppressedUpdate:
    """One optimizer step per stage, ascending, each stage's update suppressed for the weights of
    smaller stages (``beta^(j - i)``) and zero for weights the stage does not use."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, beta: float) -> None:
        self.model, self.optimizer, self.beta = model, optimizer, beta
        self.refresh()

    def refresh(self) -> None:
        """Re-read the owners (after the construction moved neurons)."""
        self.owners = self.model.weight_owners()
        self.params = [p for p, _ in self.owners]

    def __call__(self, stage_losses: list[Tensor], scales: dict[str, Tensor] | None = None,
                 importance: dict[str, Tensor] | None = None, alpha_growth: float = 1.5) -> None:
        """Backward and step every stage's loss (the forward pass was shared). With ``scales``
        (requires_grad ones per layer) ``alpha^j |dL_j / dr|`` accumulates into ``importance``."""
        extra = list(scales.values()) if scales is not None else []
        grads = []
        for j, loss in enumerate(stage_losses):
            last = j == len(stage_losses) - 1
            grads.append(torch.autograd.grad(loss, self.params + extra, retain_graph=not last, allow_unused=True))
        for j, stage_grads in enumerate(grads):
            before = [p.detach().clone() for p in self.params]
            for p, g in zip(self.params, stage_grads):
                p.grad = g
            self.optimizer.step()
            with torch.no_grad():
                for (p, owner), old in zip(self.owners, before):
                    scale = torch.where(owner <= j, self.beta ** (j - owner).clamp(min=0).to(p.dtype),
                                        torch.zeros((), dtype=p.dtype))
                    p.copy_(old + scale * (p - old))
            if scales is not None and importance is not None:
                for (name, acc), g in zip(importance.items(), stage_grads[len(self.params):]):
                    if g is not None:
                        acc.add_(alpha_growth ** j * g.abs())
        self.optimizer.zero_grad(set_to_none=True)


def construct(model: nn.Module, batches: Iterable, stage_losses: Callable[[list[dict]], list[Tensor]],
              update: SuppressedUpdate, options: SteppingOptions,
              log: Callable[[str], None] = print) -> list[dict]:
    """SteppingNet's construction on ``model`` (every neuron in stage 0 but the pinned neck).

    Args:
        batches: endless iterator of (images, targets).
        stage_losses: outputs of every stage (and the targets, bound by the caller) -> their losses.
        update: the suppressed optimizer step.
        options: targets, iterations, batches per iteration, the rule.
        log: progress lines.

    Returns one record per iteration (MACs per stage, neurons moved, mean losses).
    """
    floors = layer_floors(model, options.floor) if options.rule == "floors" else _minimum_floors(model)
    ranking = "importance_per_mac" if options.rule == "floors" else "importance"
    targets = list(options.targets)
    expanded_total = model.macs(model.num_subnets - 1)  # P_t: everything in stage 0 (plus the later heads)
    chunk = (expanded_total - targets[0]) / options.iterations
    history = []
    for iteration in range(options.iterations):
        importance = {layer.name: torch.zeros(w) for layer, w in zip(model.layout, model.widths)}
        losses = []
        model.train()
        for _ in range(options.batches):
            images, targets_batch = next(batches)
            scales = {name: torch.ones(w, requires_grad=True) for name, w in zip(importance, model.widths)}
            outputs = model(images, scales=scales)
            stage = stage_losses(outputs, targets_batch)
            update(stage, scales, importance, options.alpha_growth)
            losses.append([v.item() for v in stage])
        moved = move_neurons(model, list(importance.values()), targets, chunk, floors, ranking)
        update.refresh()
        macs = [model.macs(i) for i in range(model.num_subnets)]
        mean = [sum(col) / len(col) for col in zip(*losses)]
        history.append({"iteration": iteration + 1, "macs": macs, "moved": moved, "loss": mean})
        log(f"construction {iteration + 1}/{options.iterations}: moved {moved}, MACs "
            + " / ".join(f"{m / 1e6:.1f}M ({m / t:.2f})" for m, t in zip(macs, targets))
            + ", loss " + " / ".join(f"{v:.2f}" for v in mean))
    # targets not met within N_t iterations: keep moving by the last importance, without training
    while any(model.macs(i) > t for i, t in enumerate(targets)):
        if move_neurons(model, list(importance.values()), targets, chunk, floors, ranking) == 0:
            break
    update.refresh()
    return history
