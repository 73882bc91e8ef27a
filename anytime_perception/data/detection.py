"""Labelled detection sets, whatever their on-disk format: samples, class names, data issues.

The readers (``voc.py``, ``coco.py``, ``yolo.py``) turn a layout into a :class:`DetectionSet`;
:func:`open_detection` (``formats.py``) picks the reader. The class names always come from the
data (or from the user's ``--classes``), never from a constant.

Bad data never ends in a traceback: every problem becomes a :class:`DataIssue` that names the file
and what is wrong, and the sample it concerns is skipped and counted (or, with ``strict``, the
read stops with a :class:`DataError` listing the issues). Pure numpy and OpenCV, no torch.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

__all__ = ["Sample", "DataIssue", "DataError", "DetectionSet", "IMAGE_SUFFIXES", "read_rgb", "image_size",
           "check_boxes", "BOX_TOLERANCE_PX"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Annotation tools often write x1 = width (1-based VOC pixels): boxes may reach this far past the
# image border and are clipped to it; a box further out is an error in the data.
BOX_TOLERANCE_PX = 1.0


class DataError(ValueError):
    """The data cannot be used as it is; the message names the file(s) and the problem."""


@dataclass(frozen=True)
class DataIssue:
    """One problem found in the data: the file it is in and what is wrong."""

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass(frozen=True)
class Sample:
    """One annotated image: boxes [M, 4] as x0, y0, x1, y1 in pixels, labels [M] class ids
    (indices into the set's ``labels``); ``size`` is (height, width) of the image."""

    image_path: Path
    boxes: np.ndarray
    labels: np.ndarray
    size: tuple[int, int] = (0, 0)


@dataclass
class DetectionSet:
    """Samples of one split, the class names their label ids index, and what was skipped."""

    samples: list[Sample]
    labels: tuple[str, ...]
    source: str
    format: str
    issues: list[DataIssue] = field(default_factory=list)
    ignored: Counter = field(default_factory=Counter)  # objects of classes left out (name -> count)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self):
        return iter(self.samples)

    def __getitem__(self, index):
        return self.samples[index]

    @property
    def num_boxes(self) -> int:
        return sum(len(s.labels) for s in self.samples)

    def class_counts(self) -> dict[str, int]:
        counts = Counter(int(c) for s in self.samples for c in s.labels)
        return {name: counts.get(i, 0) for i, name in enumerate(self.labels)}

    def summary(self) -> str:
        """One line: where, how much, which classes, what was skipped."""
        classes = ", ".join(f"{n} {c}" for n, c in self.class_counts().items())
        line = (f"{self.source} ({self.format}): {len(self)} images, {self.num_boxes} boxes, "
                f"{len(self.labels)} classes [{classes}]")
        if self.issues:
            line += f"; skipped {len(self.issues)} (see the messages above)"
        if self.ignored:
            line += "; ignored objects of other classes: " + ", ".join(f"{n} {c}" for n, c in sorted(self.ignored.items()))
        return line

    def select_classes(self, names: Sequence[str], allow_missing: bool = False) -> "DetectionSet":
        """Keep only the objects of ``names``, relabelled to that order (others are counted in
        ``ignored``); a name the data does not have is an error unless ``allow_missing`` (a
        validation set read against the training set's labels)."""
        names = tuple(names)
        missing = [n for n in names if n not in self.labels]
        if missing and not allow_missing:
            raise DataError(f"{self.source}: classes {missing} are not in the data; it has {list(self.labels)}")
        index = {self.labels.index(n): i for i, n in enumerate(names) if n in self.labels}
        ignored = Counter(self.ignored)
        samples = []
        for s in self.samples:
            keep = np.array([int(c) in index for c in s.labels], bool)
            ignored.update(self.labels[int(c)] for c in s.labels[~keep])
            new = np.array([index[int(c)] for c in s.labels[keep]], np.int64)
            samples.append(replace(s, boxes=s.boxes[keep], labels=new))
        return replace(self, samples=samples, labels=names, ignored=ignored)

    def rename(self, mapping: dict[str, str]) -> "DetectionSet":
        """Classes renamed (``old -> new``; several old names may merge into one new class); the
        new labels keep the order in which they first appear in the old ones."""
        unknown = [n for n in mapping if n not in self.labels]
        if unknown:
            raise DataError(f"{self.source}: cannot rename {unknown}: not among its classes {list(self.labels)}")
        renamed = [mapping.get(n, n) for n in self.labels]
        labels = tuple(dict.fromkeys(renamed))
        index = np.array([labels.index(n) for n in renamed], np.int64)
        samples = [replace(s, labels=index[s.labels] if len(s.labels) else s.labels) for s in self.samples]
        return replace(self, samples=samples, labels=labels)

    def split(self, val_fraction: float = 0.2, seed: int = 0) -> tuple["DetectionSet", "DetectionSet"]:
        """Deterministic (train, val): a seeded permutation of the samples in their sorted order;
        the first ``round(N * val_fraction)`` of it are validation."""
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), not {val_fraction}")
        order = np.random.default_rng(seed).permutation(len(self.samples))
        n_val = int(round(len(self.samples) * val_fraction))
        if not 0 < n_val < len(self.samples):
            raise DataError(f"{self.source}: {len(self.samples)} usable images are too few to split off "
                            f"{val_fraction:.0%} for validation; give a validation set (--val-data)")
        val, train = set(order[:n_val].tolist()), set(order[n_val:].tolist())
        pick = lambda chosen: [s for i, s in enumerate(self.samples) if i in chosen]  # noqa: E731
        return replace(self, samples=pick(train)), replace(self, samples=pick(val))

    def subset(self, count: int, seed: int = 0) -> "DetectionSet":
        """A deterministic random subset of ``count`` samples, kept in their order."""
        if count <= 0 or count >= len(self):
            return self
        chosen = set(np.random.default_rng(seed).permutation(len(self))[:count].tolist())
        return replace(self, samples=[s for i, s in enumerate(self.samples) if i in chosen])

    def finish(self, strict: bool) -> "DetectionSet":
        """Report the issues: with ``strict`` stop on any, otherwise stop only if nothing is left."""
        if self.issues and strict:
            raise DataError(f"{len(self.issues)} problem(s) in {self.source} (--strict):\n  "
                            + "\n  ".join(map(str, self.issues)))
        if not self.samples:
            detail = ("; problems:\n  " + "\n  ".join(map(str, self.issues[:20]))) if self.issues else ""
            raise DataError(f"{self.source}: no usable annotated images{detail}")
        return self


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as RGB uint8 [H, W, 3]; ``OSError`` naming the file if it cannot be read."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_size(path: Path) -> tuple[int, int] | str:
    """(height, width) of a readable image file, or what is wrong with it."""
    if not path.is_file():
        return "image file not found"
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        return "image cannot be decoded (corrupt or not an image)"
    return int(image.shape[0]), int(image.shape[1])


def check_boxes(boxes: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, str | None]:
    """Boxes clipped to the image, or the problem with the first bad one: not finite, of zero
    area, or reaching more than ``BOX_TOLERANCE_PX`` outside the (height, width) image."""
    h, w = size
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        if not np.isfinite([x0, y0, x1, y1]).all():
            return boxes, f"box {i} has non-finite coordinates"
        if x1 <= x0 or y1 <= y0:
            return boxes, f"box {i} ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has zero or negative area"
        t = BOX_TOLERANCE_PX
        if x0 < -t or y0 < -t or x1 > w + t or y1 > h + t:
            return boxes, f"box {i} ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {w}x{h} image"
    clipped = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32).reshape(-1, 4)
    if ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])).any():
        return boxes, f"a box lies on the border of the {w}x{h} image with no area inside it"
    return clipped, None


def make_sample(image_path: Path, boxes: list | np.ndarray, labels: list | np.ndarray, source: Path,
                issues: list[DataIssue], size: tuple[int, int] | None = None) -> Sample | None:
    """A checked sample, or None with the problem appended to ``issues`` (``source`` is the
    annotation file the boxes came from; ``size`` the image's (height, width) if the caller checked against the image all the same)."""
    found = image_size(image_path)
    if isinstance(found, str):
        issues.append(DataIssue(image_path, found + (f" (annotated in {source})" if source != image_path else "")))
        return None
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    clipped, problem = check_boxes(boxes, found)
    if problem:
        issues.append(DataIssue(source, problem if source.suffix != ".json" else f"image {image_path.name}: {problem}"))
        return None
    return Sample(image_path, clipped, np.asarray(labels, np.int64).reshape(-1), found)
