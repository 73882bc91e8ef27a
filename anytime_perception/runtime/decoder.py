"""Decoding in numpy: CenterNet heatmap peaks, or an ultralytics YOLO head's boxes after
class-wise NMS, -> boxes in pixels of the incoming image; a classifier's logits -> one whole-image
detection (its top class). ``decode`` picks the manifest's decoder."""
from __future__ import annotations

import numpy as np

from ..letterbox import Letterbox
from .manifest import YOLO_HEAD, DecoderSpec
from .types import Detection

__all__ = ["decode_centernet", "decode_yolo", "decode_softmax", "decode", "nms"]

MAX_NMS = 30000  # candidates entering NMS at most, highest scores first (as ultralytics)


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
    # the offset head's sigmoid spans the cell (0, 1), or (-r, r + 1) cells when trained at neighbours
    r = spec.offset_range
    offset_x, offset_y = (2 * r + 1) / (1.0 + np.exp(-heads["offset"][0][:, ys, xs])) - r  # [2, K]
    # a box spans at most the whole network input (G cells): an untrained or diverged size head
    # must not publish infinite boxes
    log_size = np.minimum(heads["size"][0][:, ys, xs], np.log(logits.shape[-1]))
    width, height = np.exp(log_size) * (spec.stride / letterbox.scale)  # [2, K]
    centres = letterbox.to_image(np.stack([xs + offset_x, ys + offset_y], 1) * spec.stride)  # [K, 2]
    return [Detection(c, labels[c], s, x, y, w, h) for c, s, (x, y), w, h in zip(
        cls.tolist(), scores.tolist(), centres.tolist(), width.tolist(), height.tolist())]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept ``boxes`` ([K, 4] x0, y0, x1, y1),
    highest score first; a box overlapping a kept one at IoU > ``iou_threshold`` is dropped.
    One vectorised step per kept box (at most ``max_keep``)."""
    order = np.argsort(-scores, kind="stable")
    x0, y0, x1, y1 = boxes.T
    areas = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
    keep = []
    while order.size and len(keep) < max_keep:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        h = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        order = rest[inter <= iou_threshold * np.maximum(union, 1e-9)]  # IoU <= threshold, no division
    return np.asarray(keep, np.int64)


def decode_yolo(heads: dict[str, np.ndarray], spec: DecoderSpec, letterbox: Letterbox,
                labels: tuple[str, ...], score_threshold: float) -> list[Detection]:
    """Decode one image's ultralytics YOLO detection output.

    Every (anchor, class) score above ``score_threshold`` is a candidate (multi-label, as
    ultralytics' validator; the CenterNet decoder likewise keeps per-class peaks); NMS is
    class-wise at IoU ``spec.nms_iou``, at most ``spec.max_detections`` boxes, highest first.
    Boxes are clipped to the image, as ultralytics does.

    Args:
        heads: ``predictions`` [1, 4 + C, N]: cx, cy, w, h in network input pixels, then C class
            scores (already sigmoid) per anchor point.
        spec: decoder settings (NMS IoU, max detections).
        letterbox: the preprocessing transform to undo.
        labels: class names by id.
        score_threshold: minimum class score in [0, 1].

    Returns:
        Detections in pixels of the incoming image, highest score first.
    """
    pred = heads[YOLO_HEAD][0]  # [4 + C, N]
    scores = pred[4:]  # [C, N]
    cls, anchor = np.nonzero(scores > score_threshold)  # [K] each
    values = scores[cls, anchor]
    if values.size > MAX_NMS:
        top = np.argpartition(-values, MAX_NMS)[:MAX_NMS]
        cls, anchor, values = cls[top], anchor[top], values[top]
    cx, cy, w, h = pred[:4, anchor].astype(np.float32)  # [K] each, network input pixels
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)  # [K, 4]
    # class-wise NMS in one pass: each class's boxes moved to their own far-apart region
    span = float(np.abs(boxes).max()) * 2 + 1 if boxes.size else 0.0
    keep = nms(boxes + (cls * span)[:, None], values, spec.nms_iou, spec.max_detections)  # float64: exact offsets
    cls, values, boxes = cls[keep], values[keep], boxes[keep]
    image = letterbox.to_image(boxes.reshape(-1, 2, 2)).reshape(-1, 4)  # [K, 4] image pixels
    image = np.clip(image, 0, [letterbox.width / letterbox.scale, letterbox.height / letterbox.scale] * 2)
    x0, y0, x1, y1 = image.T
    return [Detection(c, labels[c], s, x, y, bw, bh) for c, s, x, y, bw, bh in zip(
        cls.tolist(), values.tolist(), ((x0 + x1) / 2).tolist(), ((y0 + y1) / 2).tolist(),
        (x1 - x0).tolist(), (y1 - y0).tolist())]


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
    """Decode one image's heads with the manifest's decoder (``spec.type``)."""
    if spec.type == "softmax":
        return decode_softmax(heads, letterbox, labels, score_threshold)
    if spec.type == "yolo":
        return decode_yolo(heads, spec, letterbox, labels, score_threshold)
    if spec.type == "centernet":
        return decode_centernet(heads, spec, letterbox, labels, score_threshold)
    raise ValueError(f"decoder type {spec.type!r} unknown")
