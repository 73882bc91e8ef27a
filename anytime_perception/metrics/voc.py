"""Detection metrics: VOC-style average precision (all-point interpolation) and mAP."""
from __future__ import annotations

import numpy as np

__all__ = ["iou", "average_precision", "mean_average_precision"]


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x0, y0, x1, y1 box with [M, 4] boxes."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def average_precision(predictions: list[tuple[int, float, np.ndarray]], truths: dict[int, np.ndarray],
                      iou_threshold: float = 0.5) -> float:
    """AP of one class.

    Args:
        predictions: (image index, score, box) over all images.
        truths: image index -> [M, 4] ground-truth boxes of this class.
        iou_threshold: minimum IoU of a true positive; each truth matches at most once.

    Returns:
        Area under the interpolated precision/recall curve; NaN if the class has no truths.
    """
    n_truth = sum(len(b) for b in truths.values())
    if n_truth == 0:
        return float("nan")
    matched = {i: np.zeros(len(b), bool) for i, b in truths.items()}
    tp = []
    for image, _, box in sorted(predictions, key=lambda p: -p[1]):
        gts = truths.get(image, np.zeros((0, 4)))
        hit = False
        if len(gts):
            overlaps = iou(box, gts)
            best = int(np.argmax(overlaps))
            if overlaps[best] >= iou_threshold and not matched[image][best]:
                matched[image][best] = hit = True
        tp.append(hit)
    tp_cum = np.cumsum(tp)
    recall = np.concatenate([[0.0], tp_cum / n_truth, [1.0]])
    precision = np.concatenate([[1.0], tp_cum / np.arange(1, len(tp) + 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def mean_average_precision(predictions: list[list[tuple[int, float, np.ndarray]]],
                           truths: list[dict[int, np.ndarray]], iou_threshold: float = 0.5) -> tuple[float, list[float]]:
    """mAP over classes with ground truth, and the per-class APs (index = class id)."""
    aps = [average_precision(p, t, iou_threshold) for p, t in zip(predictions, truths)]
    return float(np.nanmean(aps)), aps
