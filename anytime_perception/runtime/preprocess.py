"""Image -> network input: letterbox, normalise, NCHW."""
from __future__ import annotations

import numpy as np

from ..letterbox import Letterbox, letterbox
from .manifest import InputSpec

__all__ = ["preprocess"]


def preprocess(image: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, Letterbox]:
    """RGB uint8 [H, W, 3] -> float32 [1, 3, S, S] network input and its letterbox."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) == 0:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    canvas, box = letterbox(image, spec.size, spec.pad_value)
    x = (canvas.astype(np.float32) - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None]), box
