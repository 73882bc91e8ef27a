"""Letterbox resizing shared by training data and the runtime, so both see identical pixels.

A leaf module (numpy + OpenCV only): the one place the input geometry is defined.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Letterbox", "letterbox", "letterbox_into"]


@dataclass(frozen=True)
class Letterbox:
    """canvas = image * scale + (pad_x, pad_y); the image covers ``width`` x ``height`` of it."""

    scale: float
    pad_x: int
    pad_y: int
    width: int
    height: int

    @classmethod
    def fit(cls, height: int, width: int, size: int) -> Letterbox:
        """Scale an image to fit a ``size`` x ``size`` canvas, keeping aspect, centred."""
        scale = size / max(height, width)
        nw, nh = max(1, round(width * scale)), max(1, round(height * scale))
        return cls(scale, (size - nw) // 2, (size - nh) // 2, nw, nh)

    def to_canvas(self, boxes: np.ndarray) -> np.ndarray:
        """Map [M, 4] x0, y0, x1, y1 image boxes into the canvas."""
        return boxes * self.scale + np.array([self.pad_x, self.pad_y] * 2, np.float32)

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Map [..., 2] canvas points back to image pixels."""
        return (xy - (self.pad_x, self.pad_y)) / self.scale


def letterbox_into(image: np.ndarray, canvas: np.ndarray, pad_value: int = 114) -> Letterbox:
    """Resize ``image`` (bilinear, aspect kept) into the square uint8 ``canvas`` in place."""
    box = Letterbox.fit(image.shape[0], image.shape[1], canvas.shape[0])
    canvas[...] = pad_value
    canvas[box.pad_y:box.pad_y + box.height, box.pad_x:box.pad_x + box.width] = cv2.resize(
        image, (box.width, box.height), interpolation=cv2.INTER_LINEAR)
    return box


def letterbox(image: np.ndarray, size: int, pad_value: int = 114) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect (bilinear) into a new centred ``size`` x ``size`` canvas."""
    canvas = np.empty((size, size, 3), np.uint8)
    return canvas, letterbox_into(image, canvas, pad_value)
