"""Decoding in numpy: CenterNet heatmap peaks -> boxes in pixels of the incoming image; a
classifier's logits -> one whole-image detection (its top class)."""
from __future__ import annotations

import numpy as np

from ..letterbox import Letterbox
from .manifest import DecoderSpec
from .types import Detection

__all__ = ["decode_centernet", "decode_softmax", "decode"]


def _local_peaks(logits: np.ndarray, candidates: tuple[np.ndarray, ...], kernel: int) -> np.ndarray:
    """Which candidate cells (c, y, x) are maxima of their ``kernel`` x ``kernel`` neighbourhood."""
    r = kernel // 2
    padded = np.full((logits.shape[0], logits.shape[1] + 2 * r, logits.shape[2] + 2 * r), -np.inf, logits.dtype)
    padded[:, r:r + logits.shape[1], r:r + logits.shape[2]] = logits
    cls, ys, xs = candidates
    values = logits[cls, ys, xs]
    keep = np.ones(cls.size, bool)
    for dy in range(kernel):
        for dx in range(kernel):
            keep &= values >= padded[cls, ys + dy, xs + dx]
    return keep


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
    candidates = np.nonzero(logits > threshold)  # few cells: test only those for a local maximum
    keep = _local_peaks(logits, candidates, spec.nms_kernel)
    cls, ys, xs = (c[keep] for c in candidates)
    order = np.argsort(-logits[cls, ys, xs])[: spec.max_detections]
    cls, ys, xs = cls[order], ys[order], xs[order]
    scores = 1.0 / (1.0 + np.exp(-logits[cls, ys, xs]))
    offset_x, offset_y = 1.0 / (1.0 + np.exp(-heads["offset"][0][:, ys, xs]))  # [2, K]
    # a box spans at most the whole network input (G cells): an untrained or diverged size head
    # must not publish infinite boxes
    log_size = np.minimum(heads["size"][0][:, ys, xs], np.log(logits.shape[-1]))
    width, height = np.exp(log_size) * (spec.stride / letterbox.scale)  # [2, K]
    centres = letterbox.to_image(np.stack([xs + offset_x, ys + offset_y], 1) * spec.stride)  # [K, 2]
    return [Detection(c, labels[c], s, x, y, w, h) for c, s, (x, y), w, h in zip(
        cls.tolist(), scores.tolist(), centres.tolist(), width.tolist(), height.tolist())]


def decode_softmax(heads: dict[str, np.ndarray], letterbox: Letterbox, labels: tuple[str, ...],
                   score_threshold: float) -> list[Detection]:
    """A classifier's answer as one detection covering the whole incoming image: the top class of
    ``softmax(logits)`` with its probability as the score (none below ``score_threshold``)."""
    logits = np.ravel(heads["logits"]).astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    c = int(p.argmax())
    if p[c] < score_threshold:
        return []
    width, height = letterbox.width / letterbox.scale, letterbox.height / letterbox.scale
    return [Detection(c, labels[c], float(p[c]), width / 2, height / 2, width, height)]


def decode(heads: dict[str, np.ndarray], spec: DecoderSpec, letterbox: Letterbox, labels: tuple[str, ...],
           score_threshold: float) -> list[Detection]:
    """Decode one image's heads with the manifest's decoder."""
    if spec.type == "softmax":
        return decode_softmax(heads, letterbox, labels, score_threshold)
    return decode_centernet(heads, spec, letterbox, labels, score_threshold)
