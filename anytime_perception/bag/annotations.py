"""Labels of a recording: a COCO detection JSON whose images are the bag's frames.

Each ``images`` entry is one frame: ``id`` (1.. in bag order), ``file_name`` (the source image's
name), ``width`` and ``height`` of the frame as written in the bag, and ``stamp_ns``, the frame's
header stamp, by which results are joined to their truth. Boxes are scaled to the frame: frames
are a plain resize of the source image (no letterbox), so x scales by frame width / image width
and y by frame height / image height. Categories are ids 1..C in label order, as ``write_coco``
(``data/writers.py``) writes them; that writer describes image files on disk (their own sizes,
copied or referenced), a recording's frames have the bag's size and a stamp, hence this one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data import Sample

__all__ = ["FrameLabels", "frame_labels", "write_frame_coco"]


@dataclass(frozen=True)
class FrameLabels:
    """The truth of one frame: boxes [M, 4] as x0, y0, x1, y1 in frame pixels, class ids [M]."""

    stamp_ns: int
    file_name: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray


def frame_labels(sample: Sample, stamp_ns: int, size: tuple[int, int] | None) -> FrameLabels:
    """A sample's boxes on its frame: ``size`` (width, height) the frame was resized to, None if
    it kept the image's own size."""
    h, w = sample.size
    width, height = size if size is not None else (w, h)
    scale = np.array([width / w, height / h, width / w, height / h], np.float64)
    boxes = np.asarray(sample.boxes, np.float64).reshape(-1, 4) * scale
    return FrameLabels(int(stamp_ns), sample.image_path.name, int(width), int(height), boxes,
                       np.asarray(sample.labels, np.int64).reshape(-1))


def write_frame_coco(path: str | Path, labels: Sequence[str], frames: Sequence[FrameLabels],
                     info: dict | None = None) -> Path:
    """Write the frames' truth as a COCO detection JSON at ``path`` (``info`` goes into its
    ``info`` entry: which bag, topic, source set)."""
    path = Path(path)
    images, annotations = [], []
    for i, frame in enumerate(frames, 1):
        images.append({"id": i, "file_name": frame.file_name, "width": frame.width, "height": frame.height,
                       "stamp_ns": frame.stamp_ns})
        for (x0, y0, x1, y1), label in zip(frame.boxes.tolist(), frame.labels.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(label) + 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    coco = {"info": dict(info or {}), "images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": name} for i, name in enumerate(labels)]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco))
    return path
