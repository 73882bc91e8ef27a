"""Torch dataset over the road-sign split, producing images and CenterNet targets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.road_signs import CLASSES, load_split, random_affine, read_rgb
from ..letterbox import letterbox
from ..nets.centernet import encode_targets

__all__ = ["RoadSignDetection", "MEAN", "STD"]

MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


class RoadSignDetection(Dataset):
    """Letterboxed (val) or randomly scaled/placed (train) images with dense targets.

    Decoded images are cached in memory (the set is small) so epochs cost only augmentation.
    """

    def __init__(self, root: str | Path, split: str, input_size: int, stride: int,
                 augment: bool, seed: int = 0) -> None:
        self.samples = load_split(root, split)
        self.images = [read_rgb(s.image_path) for s in self.samples]
        self.input_size, self.stride, self.augment = input_size, stride, augment
        self.rng = np.random.default_rng(seed)
        self.num_classes = len(CLASSES)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        sample, image = self.samples[index], self.images[index]
        if self.augment:
            canvas, boxes, labels = random_affine(image, sample.boxes, sample.labels, self.input_size, self.rng)
        else:
            canvas, box = letterbox(image, self.input_size)
            boxes = box.to_canvas(sample.boxes)
            labels = sample.labels
        x = (canvas.astype(np.float32) - MEAN) / STD
        targets = encode_targets(boxes, labels, self.num_classes, self.input_size // self.stride, self.stride)
        return torch.from_numpy(x.transpose(2, 0, 1).copy()), {k: torch.from_numpy(v) for k, v in targets.items()}
