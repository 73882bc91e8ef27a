"""Image -> network input: letterbox, normalise, NCHW."""
from __future__ import annotations

import numpy as np

from ..letterbox import Letterbox, letterbox_into
from .manifest import InputSpec

__all__ = ["Preprocessor"]


class Preprocessor:
    """RGB uint8 [H, W, 3] -> float32 [1, 3, S, S] (x - mean) / std, and its letterbox.

    The letterbox canvas is reused between calls (one caller at a time); every call returns a
    new input array, which stays valid while the frame is refined.
    """

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self._canvas = np.empty((spec.size, spec.size, 3), np.uint8)
        self._mean = np.asarray(spec.mean, np.float32)[:, None, None]
        self._inv_std = (1.0 / np.asarray(spec.std, np.float32))[:, None, None]

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) == 0:
            raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
        box = letterbox_into(image, self._canvas, self.spec.pad_value)
        x = np.empty((1, 3, self.spec.size, self.spec.size), np.float32)
        np.subtract(self._canvas.transpose(2, 0, 1), self._mean, out=x[0])
        x *= self._inv_std
        return x, box
