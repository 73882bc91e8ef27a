"""Torch dataset over any detection set (``data.open_detection``), producing images and
CenterNet targets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data import DetectionSet, load_split, read_rgb
from ..data.augment import AugmentConfig, random_affine
from ..letterbox import letterbox
from ..nets.centernet import encode_targets

__all__ = ["DetectionDataset", "MEAN", "STD", "PAD_VALUE"]

# Input normalisation of the detectors, on 0..255 pixels (what the manifest's input section holds).
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
PAD_VALUE = 114


class DetectionDataset(Dataset):
    """Letterboxed (``augment`` None) or randomly scaled/placed (``augment``) images with dense
    targets. Decoded images are cached in memory so epochs cost only augmentation.

    Args:
        data: the samples and their class names.
        input_size: square network input in pixels.
        stride: output stride of the heads (grid = input_size / stride).
        augment: training augmentation, or None for validation (letterbox only).
        seed: seed of the augmentation.
    """

    def __init__(self, data: DetectionSet, input_size: int, stride: int, augment: AugmentConfig | None,
                 seed: int = 0, regress_radius: int = 0) -> None:
        self.data = data
        self.samples = data.samples
        self.labels = data.labels
        self.num_classes = len(data.labels)
        self.images = [read_rgb(s.image_path) for s in self.samples]
        self.input_size, self.stride, self.augment = input_size, stride, augment
        self.regress_radius = regress_radius
        self.rng = np.random.default_rng(seed)

    @classmethod
    def from_path(cls, root: str | Path, split: str, input_size: int, stride: int, augment: AugmentConfig | None,
                  seed: int = 0, classes: tuple[str, ...] | None = None) -> "DetectionDataset":
        """``split`` (train or val) of a set in any format, as ``data.load_split`` splits it."""
        return cls(load_split(root, split, classes=classes), input_size, stride, augment, seed)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        sample, image = self.samples[index], self.images[index]
        if self.augment is not None:
            canvas, boxes, labels = random_affine(image, sample.boxes, sample.labels, self.input_size, self.rng,
                                                  self.augment, PAD_VALUE)
        else:
            canvas, box = letterbox(image, self.input_size, PAD_VALUE)
            boxes = box.to_canvas(sample.boxes)
            labels = sample.labels
        x = (canvas.astype(np.float32) - MEAN) / STD
        targets = encode_targets(boxes, labels, self.num_classes, self.input_size // self.stride, self.stride,
                                 regress_radius=self.regress_radius)
        return torch.from_numpy(x.transpose(2, 0, 1).copy()), {k: torch.from_numpy(v) for k, v in targets.items()}
