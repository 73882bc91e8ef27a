"""CenterNet decoding in numpy: heatmap peaks -> boxes in pixels of the incoming image."""
from __future__ import annotations

import numpy as np

from .manifest import DecoderSpec
from ..letterbox import Letterbox
from .types import Detection

__all__ = ["decode_centernet"]


def _max_pool(x: np.ndarray, kernel: int) -> np.ndarray:
    """Same-size max pooling over the last two axes (stride 1, -inf padding)."""
    r = kernel // 2
    padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(r, r), (r, r)], constant_values=-np.inf)
    h, w = x.shape[-2:]
    out = np.full_like(x, -np.inf)
    for dy in range(kernel):
        for dx in range(kernel):
            np.maximum(out, padded[..., dy:dy + h, dx:dx + w], out=out)
    return out


def decode_centernet(heads: dict[str, np.ndarray], spec: DecoderSpec, letterbox: Letterbox,
                     labels: tuple[str, ...], score_threshold: float) -> list[Detection]:
    """Decode one image's head outputs.

    Args:
        heads: ``heatmap`` [1, C, G, G] logits, ``size`` [1, 2, G, G] log size in grid cells,
            ``offset`` [1, 2, G, G] logits of the sub-cell centre offset.
        spec: decoder settings (stride, peak NMS kernel, max detections).
        letterbox: the preprocessing transform to undo.
        labels: class names by id.
        score_threshold: minimum peak score in [0, 1].

    Returns:
        Detections, highest score first, at most ``spec.max_detections``.
    """
    logits = heads["heatmap"][0]  # [C, G, G]
    threshold = np.log(score_threshold / (1 - score_threshold)) if 0 < score_threshold < 1 else -np.inf
    peaks = (logits == _max_pool(logits, spec.nms_kernel)) & (logits > threshold)
    cls, ys, xs = np.nonzero(peaks)
    if cls.size == 0:
        return []
    order = np.argsort(-logits[cls, ys, xs])[: spec.max_detections]
    cls, ys, xs = cls[order], ys[order], xs[order]
    scores = 1.0 / (1.0 + np.exp(-logits[cls, ys, xs]))
    offset = 1.0 / (1.0 + np.exp(-heads["offset"][0][:, ys, xs]))  # [2, K]
    size = np.exp(heads["size"][0][:, ys, xs]) * spec.stride / letterbox.scale  # [2, K]
    centres = letterbox.to_image(np.stack([xs + offset[0], ys + offset[1]], 1) * spec.stride)
    return [
        Detection(int(c), labels[c], float(s), float(cx), float(cy), float(w), float(h))
        for c, s, (cx, cy), w, h in zip(cls, scores, centres, size[0], size[1])
    ]
