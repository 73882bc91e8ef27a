"""Training of exit heads on a frozen backbone: PTEEnet branches and decision gates.

- ``cumulative_loss`` (PTEEnet, Lahiany & Aperstein eq. 2-4): with h_n the confidence of exit n,
  the recursive prediction ``Y_n = h_n y_n + (1 - h_n) Y_{n+1}`` (the last exit: ``Y_N = y_N``)
  and loss ``sum_n CE(Y_n, t) + lambda C_n``. The cost ``C_n`` by ``cost_form``: ``next``
  (default: PTEEnet's eq. 3 as printed, ``C_n = h_n c_n + (1 - h_n) c_{n+1}`` with ``c`` the
  exits' own costs) or ``recursive`` (EEnet's ``C_n = h_n c_n + (1 - h_n) C_{n+1}``, ``C_N = c_N``;
  what our published runs used). The targets ``t`` are the backbone's own predictions: no
  dataset labels are used.
- ``branch_warmup_loss`` (ours, not in the paper): the same loss with every confidence fixed at 1
  (``sum_n CE(y_n, t)``). On a frozen backbone ``Y_N`` already matches ``t``, so the cumulative
  loss first drives every ``h_n`` to 0, and a branch's classifier, whose gradient is scaled by
  ``h_n``, stops learning at chance level; a warm-up with this loss teaches the branches to
  classify first (``exits_run --warmup-epochs``, 0 by default).
- ``hinge_loss`` (d-gates, Shafiee et al. eq. 1): one-vs-all multi-class hinge on each gate's
  class scores, labels from the dataset; ``cross_entropy_loss`` trains the same gates for the
  comparison. ``gate_loss`` adds the paper's ``lambda ||w||`` term per gate (``penalty``
  ``norm``, default) or leaves regularisation to the optimiser's weight decay (``weight_decay``,
  ours). The paper prints the term as ``- lambda ||w||`` yet calls the loss convex in ``w``;
  only ``+ lambda ||w||`` is (a minus would reward growing ``w`` without bound), so that is used.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F
from tqdm import tqdm

from ..nets.early_exit import EarlyExitNet

__all__ = ["COST_FORMS", "GATE_PENALTIES", "cumulative_loss", "branch_warmup_loss", "hinge_loss", "cross_entropy_loss",
           "gate_loss", "fit_heads", "exit_outputs"]

COST_FORMS = ("next", "recursive")  # PTEEnet eq. 3 as printed (default) / EEnet's recursion (ours before)
GATE_PENALTIES = ("norm", "weight_decay")  # the d-gate paper's lambda ||w|| (default) / SGD weight decay (ours)

# (outputs of every exit, dataset labels, normalised cost of every exit) -> loss
HeadLoss = Callable[[list[tuple[Tensor, Tensor]], Tensor, Tensor], Tensor]


def cumulative_loss(outputs: list[tuple[Tensor, Tensor]], costs: Tensor, lam: float,
                    cost_form: str = "next") -> Tensor:
    """PTEEnet's loss against the last exit's (the backbone's) predictions; ``costs`` are the
    cumulative MACs of each exit over the backbone's; ``cost_form`` ``next`` or ``recursive``."""
    if cost_form not in COST_FORMS:
        raise ValueError(f"cost_form must be one of {', '.join(COST_FORMS)}, got {cost_form!r}")
    targets = outputs[-1][0].argmax(1)
    cumulative = F.softmax(outputs[-1][0], 1)
    cost = costs[-1].expand(len(targets))
    loss = outputs[0][0].new_zeros(())
    for n in range(len(outputs) - 2, -1, -1):
        logits, h = outputs[n]
        h = h.unsqueeze(1)
        cumulative = h * F.softmax(logits, 1) + (1 - h) * cumulative
        later = cost if cost_form == "recursive" else costs[n + 1]
        cost = h.squeeze(1) * costs[n] + (1 - h.squeeze(1)) * later
        loss = loss + F.nll_loss(cumulative.clamp_min(1e-12).log(), targets) + lam * cost.mean()
    return loss


def branch_warmup_loss(outputs: list[tuple[Tensor, Tensor]], _labels: Tensor, _costs: Tensor) -> Tensor:
    """Every branch's cross-entropy against the backbone's predictions (confidences unused)."""
    targets = outputs[-1][0].argmax(1)
    return sum(F.cross_entropy(logits, targets) for logits, _ in outputs[:-1])


def hinge_loss(scores: Tensor, labels: Tensor) -> Tensor:
    """One-vs-all multi-class hinge: ``sum_c max(0, 1 - y_c f_c(x))`` with ``y_c = +-1``, batch mean."""
    signs = F.one_hot(labels, scores.shape[1]).float() * 2 - 1
    return F.relu(1 - signs * scores).sum(1).mean()


def cross_entropy_loss(scores: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(scores, labels)


def gate_loss(per_gate: Callable[[Tensor, Tensor], Tensor], weights: Sequence[Tensor] = (),
              lam: float = 0.0) -> HeadLoss:
    """Sum of ``per_gate`` over the gates (every gate trains on all data; the last exit is frozen),
    plus ``lam * ||w||`` (Frobenius norm, bias excluded) for each gate weight in ``weights``."""
    def loss(outputs: list[tuple[Tensor, Tensor]], labels: Tensor, _costs: Tensor) -> Tensor:
        data = sum(per_gate(scores, labels) for scores, _ in outputs[:-1])
        return data + lam * sum(w.norm() for w in weights) if weights and lam else data
    return loss


def fit_heads(net: EarlyExitNet, stream: Iterator[tuple[Tensor, Tensor]], steps: int, loss_fn: HeadLoss,
              costs: Tensor, lr: float = 0.05, weight_decay: float = 5e-4, desc: str = "heads") -> list[float]:
    """Train the exit heads (the backbone is frozen) for ``steps`` batches, SGD with a cosine
    schedule; returns the loss per step."""
    params = [p for p in net.heads.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    net.train()
    losses = []
    bar = tqdm(range(steps), desc=desc, leave=False)
    for _ in bar:
        images, labels = next(stream)
        loss = loss_fn(net.forward_all(images), labels, costs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    net.eval()
    return losses


@torch.no_grad()
def exit_outputs(net: EarlyExitNet, images: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """Logits ``[exits, N, classes]`` and confidences ``[exits, N]`` of every exit on ``images``."""
    net.eval()
    logits, confidences = [], []
    for start in range(0, len(images), batch_size):
        outputs = net.forward_all(images[start: start + batch_size])
        logits.append(torch.stack([o[0] for o in outputs]))
        confidences.append(torch.stack([o[1] for o in outputs]))
    return torch.cat(logits, 1), torch.cat(confidences, 1)
