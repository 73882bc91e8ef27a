"""Scoring a detector's stages on a labelled set: COCO mAP@0.5:0.95 and mAP@0.5 per stage and per
class (pycocotools), and the VOC-style mAP@0.5 the earlier results pages used.

Shared by the eval CLI (exported ONNX stages through the runtime) and validation while training
(the torch model, decoded by the same runtime decoder). The model's class ids are matched to the
data's by name, so a model and a set that order their classes differently score correctly.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..data import DetectionSet
from ..runtime.types import Detection
from .coco import coco_map
from .voc import mean_average_precision

__all__ = ["score_stages", "xyxy"]


def xyxy(d: Detection) -> np.ndarray:
    """A detection's box as x0, y0, x1, y1."""
    return np.array([d.center_x - d.width / 2, d.center_y - d.height / 2,
                     d.center_x + d.width / 2, d.center_y + d.height / 2], np.float32)


def score_stages(data: DetectionSet, detections: Sequence[Sequence[Sequence[Detection]]],
                 model_labels: Sequence[str]) -> list[dict]:
    """One row per stage: ``map`` (COCO mAP@0.5:0.95), ``map50`` (COCO mAP@0.5), ``map50_voc``
    (all-point interpolated VOC AP), ``per_class`` {name: {ap50, ap}} in the data's classes.

    Args:
        data: the samples scored, with their class names.
        detections: [stage][image] the detections of that stage on that image.
        model_labels: the model's class names by id (matched to the data's by name; classes the
            data does not have are left out).
    """
    to_data = {i: data.labels.index(n) for i, n in enumerate(model_labels) if n in data.labels}
    truths = [(s.boxes, s.labels) for s in data.samples]
    voc_truths = [{i: s.boxes[s.labels == c] for i, s in enumerate(data.samples)} for c in range(len(data.labels))]
    rows = []
    for k, per_image in enumerate(detections):
        predictions = [[(to_data[d.class_id], d.score, xyxy(d)) for d in dets if d.class_id in to_data]
                       for dets in per_image]
        coco = coco_map(truths, predictions, data.labels)
        voc: list[list] = [[] for _ in data.labels]
        for i, preds in enumerate(predictions):
            for c, score, box in preds:
                voc[c].append((i, score, box))
        rows.append({"stage": k, **coco.as_dict(), "map50_voc": round(mean_average_precision(voc, voc_truths)[0], 6)})
    return rows
