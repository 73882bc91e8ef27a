"""Image -> network input: letterbox, normalise, NCHW."""
from __future__ import annotations

import numpy as np

from ..letterbox import Letterbox, letterbox
from .manifest import InputSpec

__all__ = ["preprocess"]


def preprocess(image: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, Letterbox]:
    """RGB uint8 [H, W, 3] -> float32 [1, 3, S, S] network input, (x - mean) / std, and its letterbox."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) == 0:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    canvas, box = letterbox(image, spec.size, spec.pad_value)
    x = canvas.transpose(2, 0, 1).astype(np.float32, order="C")  # [3, S, S], a fresh contiguous copy
    x -= np.asarray(spec.mean, np.float32)[:, None, None]
    x *= (1.0 / np.asarray(spec.std, np.float32))[:, None, None]
    return x[None], box
