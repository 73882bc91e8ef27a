"""Letterbox resizing shared by training data and the runtime, so both see identical pixels.

A leaf module (numpy + OpenCV only): the one place the input geometry is defined.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Letterbox", "letterbox"]


@dataclass(frozen=True)
class Letterbox:
    """canvas = image * scale + (pad_x, pad_y)."""

    scale: float
    pad_x: float
    pad_y: float

    def to_canvas(self, boxes: np.ndarray) -> np.ndarray:
        """Map [M, 4] x0, y0, x1, y1 image boxes into the canvas."""
        return boxes * self.scale + np.array([self.pad_x, self.pad_y] * 2, np.float32)

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Map [..., 2] canvas points back to image pixels."""
        return (xy - (self.pad_x, self.pad_y)) / self.scale


def letterbox(image: np.ndarray, size: int, pad_value: int = 114) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect (bilinear) into a centred ``size`` x ``size`` canvas."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    pad_x, pad_y = (size - nw) // 2, (size - nh) // 2
    canvas = np.full((size, size, 3), pad_value, np.uint8)
    canvas[pad_y:pad_y + nh, pad_x:pad_x + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return canvas, Letterbox(scale, float(pad_x), float(pad_y))
