"""Small-image classification data for training: in-memory tensors, normalisation, augmentation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from ..data.image_folder import load_image_folder

__all__ = ["ClassificationData", "load_classification", "normalise", "batches", "evaluate"]


@dataclass(frozen=True)
class ClassificationData:
    """Normalised NCHW float tensors of both splits, their labels and the normalisation used."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    flip: bool  # horizontal flips are a valid augmentation (not for traffic signs)


def normalise(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 images ``[N, H, W, 3]`` as normalised float ``[N, 3, H, W]`` (mean/std of pixels in 0..1)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return (x - torch.from_numpy(mean).view(1, 3, 1, 1)) / torch.from_numpy(std).view(1, 3, 1, 1)


def load_classification(source: str, train_limit: int = 0, test_limit: int = 0, flip: bool = True,
                        seed: int = 0, cache_dir: str | None = "runs/cache") -> ClassificationData:
    """Load an image-folder set; ``*_limit`` > 0 takes a deterministic subset (smoke runs, tests)."""
    train, test = (load_image_folder(source, split, cache_dir=cache_dir) for split in ("train", "test"))
    if train.classes != test.classes:
        raise ValueError(f"{source}: train and test have different classes")
    if train_limit:
        train = train.subset(train_limit, seed)
    if test_limit:
        test = test.subset(test_limit, seed)
    mean = train.images.reshape(-1, 3).mean(0) / 255.0
    std = train.images.reshape(-1, 3).std(0) / 255.0
    return ClassificationData(normalise(train.images, mean, std), torch.from_numpy(train.labels),
                              normalise(test.images, mean, std), torch.from_numpy(test.labels), train.classes,
                              tuple(float(m) for m in mean), tuple(float(s) for s in std), flip)


def batches(data: ClassificationData, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless shuffled training batches with random 4-pixel-shift crops (and flips if allowed)."""
    n = len(data.train_labels)
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            index = order[start: start + batch_size]
            x = F.pad(data.train_images[index], (4, 4, 4, 4), mode="reflect")
            size = data.train_images.shape[-1]
            rows = torch.randint(0, 9, (batch_size, 1), generator=generator) + torch.arange(size)
            cols = torch.randint(0, 9, (batch_size, 1), generator=generator) + torch.arange(size)
            x = x[torch.arange(batch_size)[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
            if data.flip:
                flipped = torch.rand(batch_size, generator=generator) < 0.5
                x = torch.where(flipped.view(-1, 1, 1, 1), x.flip(3), x)
            yield x.contiguous(), data.train_labels[index]


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1000) -> list[float]:
    """Top-1 accuracy of every subnet of ``model`` (a ``forward_all`` model) on ``images``."""
    model.eval()
    correct = None
    for start in range(0, len(labels), batch_size):
        outputs = model.forward_all(images[start: start + batch_size])
        hits = [int((o.argmax(1) == labels[start: start + batch_size]).sum()) for o in outputs]
        correct = hits if correct is None else [c + h for c, h in zip(correct, hits)]
    return [c / len(labels) for c in correct]
