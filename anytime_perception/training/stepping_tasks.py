"""What SteppingNet training needs from a task: batches, a loss (with KD), an evaluation, metadata.

- classification: image-folder sets (CIFAR-10, GTSRB); loss ``gamma * CE + (1 - gamma) * KL``.
- detection: road_signs with CenterNet targets; loss ``gamma * CenterNet + (1 - gamma) *
  heatmap distillation`` from the teacher (the same split of task and teacher terms).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..data.augment import AugmentConfig
from ..nets.centernet import centernet_loss, heatmap_distillation
from ..nets.stepping_detector import OUTPUT_STRIDE, split_heads
from .classification import batches, evaluate, load_classification
from .dataset import MEAN, STD, DetectionDataset
from .stepping import Batches, Loss, distillation_loss

__all__ = ["Task", "classification_task", "detection_task", "detection_loss"]


@dataclass
class Task:
    """Everything task-specific a SteppingNet run uses."""

    name: str  # "classification" | "detection"
    stream: Batches
    steps_per_epoch: int
    loss: Loss
    evaluate: Callable[[nn.Module], dict[str, list[float]]]  # metric name -> value per subnet
    labels: tuple[str, ...]
    mean: tuple[float, float, float]  # of pixel values scaled to 0..1
    std: tuple[float, float, float]


def classification_task(source: str, batch_size: int, gamma: float, temperature: float, train_limit: int = 0,
                        test_limit: int = 0, flip: bool = True, seed: int = 0) -> Task:
    data = load_classification(source, train_limit, test_limit, flip=flip, seed=seed)
    return Task("classification", batches(data, batch_size, torch.Generator().manual_seed(seed)),
                len(data.train_labels) // batch_size,
                partial(distillation_loss, gamma=gamma, temperature=temperature),
                lambda model: {"accuracy": evaluate(model, data.test_images, data.test_labels)},
                data.classes, data.mean, data.std)


def detection_loss(output: Tensor, targets: dict[str, Tensor], teacher: Tensor | None, gamma: float,
                   num_classes: int) -> Tensor:
    """CenterNet loss of one subnet's heads; with a teacher, mixed with heatmap distillation."""
    heads = split_heads(output, num_classes)
    task = sum(centernet_loss(heads, targets).values())
    if teacher is None:
        return task
    return gamma * task + (1 - gamma) * heatmap_distillation(heads, split_heads(teacher, num_classes), targets)


def _endless(loader: DataLoader) -> Iterator[tuple[Tensor, dict[str, Tensor]]]:
    while True:
        yield from loader


@torch.no_grad()
def _validation_loss(model: nn.Module, loader: DataLoader, num_classes: int) -> list[float]:
    model.eval()
    totals: list[float] = []
    for images, targets in loader:
        losses = [float(detection_loss(o, targets, None, 1.0, num_classes)) for o in model.forward_all(images)]
        totals = losses if not totals else [t + v for t, v in zip(totals, losses)]
    return [t / len(loader) for t in totals]


def detection_task(root: str, batch_size: int, gamma: float, input_size: int = 320, seed: int = 0) -> Task:
    # the SteppingNet recipe keeps the random flips it was measured with
    train = DetectionDataset.from_path(root, "train", input_size, OUTPUT_STRIDE, AugmentConfig(flip=0.5), seed=seed)
    val = DetectionDataset.from_path(root, "val", input_size, OUTPUT_STRIDE, None, classes=train.labels)
    labels = train.labels
    loader = DataLoader(train, batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    val_loader = DataLoader(val, 20)
    return Task("detection", _endless(loader), len(loader),
                partial(detection_loss, gamma=gamma, num_classes=len(labels)),
                lambda model: {"val_loss": _validation_loss(model, val_loader, len(labels))},
                labels, tuple(float(m) / 255 for m in MEAN), tuple(float(s) / 255 for s in STD))
