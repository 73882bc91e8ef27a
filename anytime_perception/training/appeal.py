"""AppealNet training: the joint loss of approximator and predictor, the dynamic Lagrange multiplier,
and a step loop shared with the little network's pre-training.

With ``q = q(x)`` the predictor's output, ``l0`` the approximator's (little network's) per-sample
cross-entropy and ``l1`` the big network's, the joint loss of a batch is

    L = mean[q * l0 + (1 - q) * l1] + beta * mean[-log q]

White-box: ``l1`` is the frozen big network's cross-entropy on the same augmented batch (no
gradient). Black-box: the big network is an oracle, ``l1 = 0``. ``mean[-log q]`` is the predictor
loss (the cost of appealing); ``beta`` is a Lagrange multiplier adjusted after every step so that
the predictor loss converges to a target, as in DeVries & Taylor (2018), on which AppealNet
builds: ``beta /= 0.99`` when the predictor loss is at or above the target, ``beta /= 1.01`` below
it (their code: github.com/uoguelph-mlrg/confidence_estimation, ``train.py``, starting at 0.1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm import tqdm

from ..nets.appeal import AppealNet

__all__ = ["joint_loss", "appeal_loss", "LagrangeMultiplier", "Renormalise", "big_network_loss", "StepLoss",
           "little_step", "joint_step", "fit_steps", "appeal_outputs"]

EPS = 1e-12  # keeps log q finite

# (images, labels) -> (loss to minimise, numbers to log)
StepLoss = Callable[[Tensor, Tensor], tuple[Tensor, dict[str, float]]]


def joint_loss(little_loss: Tensor, q: Tensor, big_loss: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """AppealNet's joint loss ``mean[q l0 + (1 - q) l1] + beta mean[-log q]`` of per-sample losses
    ``[N]`` of the little (``l0``) and big (``l1``; zeros: black-box) networks, and the (detached)
    predictor loss ``mean(-log q)``. Any task: classification or detection losses."""
    q = q.clamp(EPS, 1 - EPS)
    predictor = -q.log().mean()
    return (q * little_loss + (1 - q) * big_loss).mean() + beta * predictor, predictor.detach()


def appeal_loss(logits: Tensor, q: Tensor, labels: Tensor, big_loss: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """The joint loss of a classifier (``joint_loss`` with the approximator's cross-entropy).

    Args:
        logits: the approximator's logits ``[N, classes]``.
        q: the predictor's outputs ``[N]`` in (0, 1).
        labels: ``[N]``.
        big_loss: the big network's per-sample loss ``[N]`` (zeros: black-box).
        beta: the Lagrange multiplier of the predictor loss.
    """
    return joint_loss(F.cross_entropy(logits, labels, reduction="none"), q, big_loss, beta)


@dataclass
class LagrangeMultiplier:
    """``beta`` of the predictor loss, moved after every step so the predictor loss approaches
    ``target``: divided by ``up`` (< 1: beta grows) at or above the target, by ``down`` (> 1) below."""

    beta: float = 0.1
    target: float = 0.5
    up: float = 0.99
    down: float = 1.01

    def update(self, predictor_loss: float) -> float:
        """Adjust ``beta`` after a step whose predictor loss was ``predictor_loss``; returns it."""
        self.beta /= self.up if predictor_loss >= self.target else self.down
        return self.beta

    def state_dict(self) -> dict[str, float]:
        """The state to resume from: ``beta`` (target and factors come from the configuration)."""
        return {"beta": self.beta}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.beta = float(state["beta"])


class Renormalise(nn.Module):
    """Re-normalise images normalised with ``mean_from``/``std_from`` to ``mean_to``/``std_to``
    (statistics of pixels in 0..1): lets networks trained on different subsets share a batch."""

    def __init__(self, mean_from: Sequence[float], std_from: Sequence[float], mean_to: Sequence[float],
                 std_to: Sequence[float]) -> None:
        super().__init__()
        shape = (1, 3, 1, 1)
        std_to = torch.tensor(std_to)
        self.register_buffer("scale", (torch.tensor(std_from) / std_to).view(shape))
        self.register_buffer("shift", ((torch.tensor(mean_from) - torch.tensor(mean_to)) / std_to).view(shape))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift  # [N, 3, H, W]


@torch.no_grad()
def big_network_loss(big: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    """Per-sample cross-entropy ``[N]`` of the frozen big network (eval mode, no gradient)."""
    big.eval()
    return F.cross_entropy(big(images), labels, reduction="none")


def little_step(net: nn.Module) -> StepLoss:
    """Cross-entropy of a plain classifier (the little network's pre-training)."""
    def step(images: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        return F.cross_entropy(net(images), labels), {}
    return step


def joint_step(net: AppealNet, multiplier: LagrangeMultiplier, big: nn.Module | None) -> StepLoss:
    """AppealNet's joint loss (white-box with ``big``, black-box without); updates ``multiplier``
    after each step with that step's predictor loss."""
    def step(images: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        out = net(images)
        big_loss = torch.zeros_like(out["q"]) if big is None else big_network_loss(big, images, labels)
        loss, predictor = appeal_loss(out["logits"], out["q"], labels, big_loss, multiplier.beta)
        used = multiplier.beta
        multiplier.update(float(predictor))
        return loss, {"predictor_loss": float(predictor), "beta": used}
    return step


def fit_steps(model: nn.Module, stream: Iterator[tuple[Tensor, Tensor]], steps: int, step_loss: StepLoss,
              optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler,
              desc: str = "train") -> list[dict[str, float]]:
    """Train ``model`` for ``steps`` batches of ``stream``; returns the loss and the logged numbers
    of every step."""
    model.train()
    history = []
    bar = tqdm(range(steps), desc=desc, leave=False)
    for _ in bar:
        images, labels = next(stream)
        loss, logged = step_loss(images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        history.append({"loss": loss.item(), **logged})
        bar.set_postfix({k: f"{v:.3f}" for k, v in history[-1].items()})
    return history


@torch.no_grad()
def appeal_outputs(net: AppealNet, images: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """Approximator logits ``[N, classes]`` and predictor outputs ``[N]`` of ``net`` (eval mode)."""
    net.eval()
    outputs = [net(images[i: i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.cat([o["logits"] for o in outputs]), torch.cat([o["q"] for o in outputs])
