"""Training augmentation for detection: random scale and placement, horizontal flip, colour
jitter. Pure numpy and OpenCV; the options are :class:`AugmentConfig` (the CLI mirrors them)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["AugmentConfig", "random_affine"]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation options.

    Args:
        flip: probability of a horizontal flip. Off by default: mirrored text and arrows are other
            signs (measured on road_signs in docs/results/own_data.md).
        scale_min, scale_max: range of the random scale, relative to fitting the image in the canvas.
        hsv: random hue, saturation and value jitter.
    """

    flip: float = 0.0
    scale_min: float = 0.6
    scale_max: float = 1.4
    hsv: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], not {self.flip}")
        if not 0.0 < self.scale_min <= self.scale_max:
            raise ValueError(f"scale range must satisfy 0 < scale_min <= scale_max, got {self.scale_min}, {self.scale_max}")


def random_affine(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    size: int,
    rng: np.random.Generator,
    config: AugmentConfig = AugmentConfig(),
    pad_value: int = 114,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random scale and placement in a ``size`` x ``size`` canvas, flip and colour jitter.

    Boxes that keep less than 30 % of their area, or are under 2 px, are dropped.
    """
    h, w = image.shape[:2]
    scale = size / max(h, w) * rng.uniform(config.scale_min, config.scale_max)
    nw, nh = w * scale, h * scale
    tx = rng.uniform(min(0.0, size - nw), max(0.0, size - nw))
    ty = rng.uniform(min(0.0, size - nh), max(0.0, size - nh))
    flip = rng.random() < config.flip
    sx = -scale if flip else scale
    ox = tx + nw if flip else tx
    matrix = np.array([[sx, 0, ox], [0, scale, ty]], np.float32)
    out = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                         borderValue=(pad_value,) * 3)
    xs = boxes[:, [0, 2]] * sx + ox
    ys = boxes[:, [1, 3]] * scale + ty
    new = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], 1)
    area = (new[:, 2] - new[:, 0]) * (new[:, 3] - new[:, 1])
    clipped = np.clip(new, 0, size)
    kept_area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (kept_area >= 0.3 * np.maximum(area, 1e-6)) & (clipped[:, 2] - clipped[:, 0] >= 2) & (
        clipped[:, 3] - clipped[:, 1] >= 2)
    if config.hsv:
        out = _colour_jitter(out, rng)
    return out, clipped[keep].astype(np.float32).reshape(-1, 4), labels[keep]


def _colour_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-5, 5)) % 180
    hsv[..., 1] *= rng.uniform(0.6, 1.4)
    hsv[..., 2] *= rng.uniform(0.6, 1.4)
    return cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)
