"""Write a :class:`DetectionSet` in any of the three layouts the readers take (COCO JSON,
Ultralytics/YOLO, Pascal VOC): format conversion, relabelled subsets, annotations beside a
recording. Images are copied (or, for COCO, referenced where they are)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from xml.sax.saxutils import escape

import yaml

from .detection import DetectionSet, Sample

__all__ = ["write_coco", "write_yolo", "write_voc", "WRITERS"]


def _copy(sample: Sample, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / sample.image_path.name
    if target.exists() and not target.samefile(sample.image_path):
        raise FileExistsError(f"{target} exists already (two images named {sample.image_path.name}?)")
    if not target.exists():
        shutil.copy(sample.image_path, target)
    return target


def write_coco(data: DetectionSet, path: str | Path, copy_images: bool = True) -> Path:
    """A COCO detection JSON at ``path`` (a .json file); images copied to ``images/`` beside it,
    or referenced by absolute path. Category ids are 1..C in label order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, sample in enumerate(data.samples, 1):
        name = _copy(sample, path.parent / "images").name if copy_images else str(sample.image_path.resolve())
        h, w = sample.size
        images.append({"id": i, "file_name": name, "height": h, "width": w})
        for box, label in zip(sample.boxes, sample.labels):
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(label) + 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(data.labels)]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def _yolo_split(data: DetectionSet, root: Path, split: str) -> None:
    for sample in data.samples:
        image = _copy(sample, root / "images" / split)
        h, w = sample.size
        lines = [f"{int(c)} {(b[0] + b[2]) / 2 / w:.6f} {(b[1] + b[3]) / 2 / h:.6f} {(b[2] - b[0]) / w:.6f} "
                 f"{(b[3] - b[1]) / h:.6f}" for b, c in zip(sample.boxes, sample.labels)]
        label = root / "labels" / split / f"{image.stem}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(line + "\n" for line in lines))


def write_yolo(train: DetectionSet, root: str | Path, val: DetectionSet | None = None) -> Path:
    """A YOLO folder: ``data.yaml``, ``images/{train,val}``, ``labels/{train,val}``; without
    ``val`` the data.yaml names no val split (the reader then splits the training set)."""
    root = Path(root)
    _yolo_split(train, root, "train")
    config = {"path": ".", "train": "images/train", "names": list(train.labels)}
    if val is not None:
        _yolo_split(val, root, "val")
        config["val"] = "images/val"
    (root / "data.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def write_voc(data: DetectionSet, root: str | Path) -> Path:
    """A VOC folder: ``images/`` and one ``annotations/<stem>.xml`` per image."""
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for sample in data.samples:
        image = _copy(sample, root / "images")
        h, w = sample.size
        objects = "".join(
            f"<object><name>{escape(data.labels[int(c)])}</name><bndbox><xmin>{b[0]:.2f}</xmin><ymin>{b[1]:.2f}</ymin>"
            f"<xmax>{b[2]:.2f}</xmax><ymax>{b[3]:.2f}</ymax></bndbox></object>" for b, c in zip(sample.boxes, sample.labels))
        (root / "annotations" / f"{image.stem}.xml").write_text(
            f"<annotation><filename>{escape(image.name)}</filename><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size>{objects}</annotation>\n")
    return root


WRITERS = {"coco": write_coco, "yolo": write_yolo, "voc": write_voc}
