"""Open any supported detection set: COCO JSON, Ultralytics/YOLO, Pascal VOC.

    train, val = open_detection("path/to/instances.json")           # COCO, seeded split
    train, val = open_detection("path/to/yolo_set")                 # YOLO: its own val split
    train, val = open_detection("voc_root", val_data="other_root")  # any format for validation

The class names come from the training data (or ``classes``); a separate validation set is read
against them by name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .coco import read_coco
from .detection import DataError, DetectionSet
from .voc import is_voc, read_voc
from .yolo import is_yolo, read_yolo, yolo_splits

__all__ = ["FORMATS", "detect_format", "read_detection", "open_detection", "load_split"]

FORMATS = ("auto", "coco", "yolo", "voc")


def detect_format(path: str | Path) -> str:
    """``coco`` (a .json file), ``yolo`` (a data.yaml, or a folder with one) or ``voc`` (a folder
    with images/ + annotations/); a ``DataError`` saying what was expected otherwise."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file() and path.suffix.lower() == ".json":
        return "coco"
    if is_yolo(path):
        return "yolo"
    if is_voc(path):
        return "voc"
    raise DataError(f"{path}: cannot tell the dataset format; expected a COCO .json file, a YOLO folder with "
                    "data.yaml, or a VOC folder with images/ and annotations/ (or say --format)")


def read_detection(path: str | Path, fmt: str = "auto", split: str = "train", images: str | Path | None = None,
                   classes: Sequence[str] | None = None) -> DetectionSet:
    """One set as it is on disk (a YOLO set's ``split``; COCO and VOC files are one set each).
    ``classes`` keeps only those classes, in that order."""
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "coco":
        data = read_coco(path, images)
    elif fmt == "yolo":
        data = read_yolo(path, split)
    else:
        data = read_voc(path)
    return data.select_classes(classes) if classes else data


def open_detection(path: str | Path, fmt: str = "auto", *, val_data: str | Path | None = None,
                   val_format: str = "auto", images: str | Path | None = None,
                   classes: Sequence[str] | None = None, val_fraction: float = 0.2, seed: int = 0,
                   strict: bool = False) -> tuple[DetectionSet, DetectionSet]:
    """(train, val) sets that share one label list.

    Validation is ``val_data`` if given (any format, its classes matched by name), else the set's
    own ``val`` split (YOLO), else a seeded split of ``path`` (``DetectionSet.split``).
    """
    fmt = detect_format(path) if fmt == "auto" else fmt
    data = read_detection(path, fmt, "train", images, classes).finish(strict)
    if val_data is not None:
        train = data
        val = read_detection(val_data, val_format, "val", None, None)
        missing = [n for n in train.labels if n not in val.labels]
        val = val.select_classes(train.labels, allow_missing=True)
        if missing:
            print(f"note: validation set {val.source} has no objects of {missing}")
    elif fmt == "yolo" and "val" in yolo_splits(Path(path)):
        train, val = data, read_yolo(path, "val").select_classes(data.labels)
    else:
        train, val = data.split(val_fraction, seed)
    return train.finish(strict), val.finish(strict)


def load_split(path: str | Path, split: str = "val", fmt: str = "auto", **kwargs) -> DetectionSet:
    """One split (``train``, ``val`` or ``all``) of a set as :func:`open_detection` splits it."""
    if split == "all":
        return read_detection(path, fmt, **kwargs).finish(False)
    if split not in ("train", "val"):
        raise ValueError(f"split must be train, val or all, not {split!r}")
    train, val = open_detection(path, fmt, **kwargs)
    return train if split == "train" else val
