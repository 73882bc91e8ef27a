"""Road-sign detection set (Pascal VOC layout): annotations, deterministic split, augmentation.

Layout: ``<root>/images/<stem>.jpg`` and ``<root>/annotations/<stem>.xml``; images are matched
to annotations by file stem (the XML ``<filename>`` may name another extension). Pure numpy and
OpenCV, no torch: the eval CLI uses it on machines without a training stack.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = ["CLASSES", "Sample", "load_split", "random_affine", "read_rgb"]

CLASSES: tuple[str, ...] = ("speedlimit", "crosswalk", "trafficlight", "stop")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Sample:
    """One annotated image: boxes [M, 4] as x0, y0, x1, y1 in pixels, labels [M] class ids."""

    image_path: Path
    boxes: np.ndarray
    labels: np.ndarray


def parse_voc(xml_path: Path, classes: tuple[str, ...] = CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [M, 4] (float32, pixels) and labels [M] (int64) of one VOC annotation file."""
    root = ET.parse(xml_path).getroot()
    boxes, labels = [], []
    for obj in root.iter("object"):
        name = obj.findtext("name", "").strip()
        if name not in classes:
            raise ValueError(f"{xml_path}: unknown class {name!r}; expected one of {classes}")
        box = obj.find("bndbox")
        boxes.append([float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
        labels.append(classes.index(name))
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


def load_split(root: str | Path, split: str, val_fraction: float = 0.2, seed: int = 0) -> list[Sample]:
    """Deterministic train/val split: a seeded permutation of the sorted image stems."""
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be train, val or all, not {split!r}")
    root = Path(root)
    images = {p.stem: p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    stems = sorted(s for s in images if (root / "annotations" / f"{s}.xml").exists())
    if not stems:
        raise FileNotFoundError(f"no annotated images under {root} (images/ + annotations/)")
    order = np.random.default_rng(seed).permutation(len(stems))
    n_val = int(round(len(stems) * val_fraction))
    chosen = {"val": order[:n_val], "train": order[n_val:], "all": order}[split]
    samples = []
    for i in sorted(chosen):
        boxes, labels = parse_voc(root / "annotations" / f"{stems[i]}.xml")
        samples.append(Sample(images[stems[i]], boxes, labels))
    return samples


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as RGB uint8 [H, W, 3]."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def random_affine(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    size: int,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = (0.6, 1.4),
    pad_value: int = 114,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training augmentation: random scale and placement in the canvas, flip, colour jitter.

    Boxes that keep less than 30 % of their area, or are under 2 px, are dropped.
    """
    h, w = image.shape[:2]
    scale = size / max(h, w) * rng.uniform(*scale_range)
    nw, nh = w * scale, h * scale
    tx = rng.uniform(min(0.0, size - nw), max(0.0, size - nw))
    ty = rng.uniform(min(0.0, size - nh), max(0.0, size - nh))
    flip = rng.random() < 0.5
    sx = -scale if flip else scale
    ox = tx + nw if flip else tx
    matrix = np.array([[sx, 0, ox], [0, scale, ty]], np.float32)
    out = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                         borderValue=(pad_value,) * 3)
    xs = boxes[:, [0, 2]] * sx + ox
    ys = boxes[:, [1, 3]] * scale + ty
    new = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], 1)
    area = (new[:, 2] - new[:, 0]) * (new[:, 3] - new[:, 1])
    clipped = np.clip(new, 0, size)
    kept_area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (kept_area >= 0.3 * np.maximum(area, 1e-6)) & (clipped[:, 2] - clipped[:, 0] >= 2) & (
        clipped[:, 3] - clipped[:, 1] >= 2)
    out = _colour_jitter(out, rng)
    return out, clipped[keep].astype(np.float32), labels[keep]


def _colour_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-5, 5)) % 180
    hsv[..., 1] *= rng.uniform(0.6, 1.4)
    hsv[..., 2] *= rng.uniform(0.6, 1.4)
    return cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)
