"""COCO box metrics (mAP@0.5:0.95, mAP@0.5, per class) through pycocotools, the reference
implementation users compare on. A leaf module: numpy and pycocotools only.

    result = coco_map(truths, detections, labels)
    result.map, result.map50, result.per_class["stop"].ap
"""
from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["ClassAP", "CocoResult", "coco_map"]

# (class id, score, [x0, y0, x1, y1] in image pixels)
Prediction = tuple[int, float, np.ndarray]


@dataclass(frozen=True)
class ClassAP:
    """AP of one class at IoU 0.5 and averaged over IoU 0.5:0.95 (NaN: no ground truth)."""

    ap50: float
    ap: float


@dataclass(frozen=True)
class CocoResult:
    """mAP over the classes that have ground truth, as pycocotools' ``stats[0]`` / ``stats[1]``."""

    map: float
    map50: float
    per_class: dict[str, ClassAP]

    def as_dict(self) -> dict:
        clean = lambda v: None if math.isnan(v) else round(float(v), 6)  # noqa: E731
        return {"map": clean(self.map), "map50": clean(self.map50),
                "per_class": {n: {"ap50": clean(c.ap50), "ap": clean(c.ap)} for n, c in self.per_class.items()}}


def _xywh(box: np.ndarray) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def coco_map(truths: Sequence[tuple[np.ndarray, np.ndarray]], predictions: Sequence[Sequence[Prediction]],
             labels: Sequence[str]) -> CocoResult:
    """COCO bbox evaluation of one prediction list per image.

    Args:
        truths: per image, boxes [M, 4] (x0, y0, x1, y1 pixels) and class ids [M].
        predictions: per image, (class id, score, box) tuples in the same pixels.
        labels: class names by id.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(truths) != len(predictions):
        raise ValueError(f"{len(truths)} images of ground truth but {len(predictions)} of predictions")
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(labels)]
    annotations = [{"image_id": i + 1, "category_id": int(c) + 1, "bbox": _xywh(b),
                    "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": 0}
                   for i, (boxes, classes) in enumerate(truths) for b, c in zip(boxes, classes)]
    for n, annotation in enumerate(annotations, 1):
        annotation["id"] = n
    results = [{"image_id": i + 1, "category_id": int(c) + 1, "bbox": _xywh(b), "score": float(s)}
               for i, preds in enumerate(predictions) for c, s, b in preds]
    nan = float("nan")
    if not annotations:
        raise ValueError("no ground-truth boxes to evaluate against")
    if not results:
        return CocoResult(0.0, 0.0, {n: ClassAP(nan, nan) for n in labels} | {
            labels[int(c)]: ClassAP(0.0, 0.0) for _, cs in truths for c in cs})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and the summary
        gt = COCO()
        gt.dataset = {"images": [{"id": i + 1} for i in range(len(truths))], "annotations": annotations,
                      "categories": categories}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"]  # [IoU thresholds, recall points, classes, areas, max dets]
    per_class = {}
    for k, name in enumerate(labels):
        p = precision[:, :, k, 0, -1]
        ap = float(p[p > -1].mean()) if (p > -1).any() else nan
        p50 = p[0]
        per_class[name] = ClassAP(float(p50[p50 > -1].mean()) if (p50 > -1).any() else nan, ap)
    return CocoResult(float(evaluator.stats[0]), float(evaluator.stats[1]), per_class)
