"""Pascal VOC layout: ``images/`` (or ``JPEGImages/``) + ``annotations/`` (or ``Annotations/``)
with one XML file per image, matched by file stem (the XML ``<filename>`` may name another
extension). Class names: sorted names found, unless the caller fixes them (``classes``)."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

from .detection import IMAGE_SUFFIXES, DataError, DataIssue, DetectionSet, make_sample

__all__ = ["read_voc", "is_voc", "voc_dirs"]

IMAGE_DIRS = ("images", "JPEGImages")
ANNOTATION_DIRS = ("annotations", "Annotations")


def voc_dirs(root: Path) -> tuple[Path, Path] | None:
    """(images dir, annotations dir) of a VOC layout under ``root``, or None."""
    images = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), None)
    annotations = next((root / d for d in ANNOTATION_DIRS if (root / d).is_dir()), None)
    return (images, annotations) if images and annotations else None


def is_voc(root: Path) -> bool:
    return root.is_dir() and voc_dirs(root) is not None


def _parse(xml_path: Path) -> tuple[list[list[float]], list[str]]:
    """Boxes and class names of one annotation file; ``ValueError`` saying what is wrong."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"not valid XML ({exc})") from None
    boxes, names = [], []
    for i, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise ValueError(f"object {i} has no <name>")
        box = obj.find("bndbox")
        if box is None:
            raise ValueError(f"object {i} ({name}) has no <bndbox>")
        try:
            boxes.append([float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
        except (TypeError, ValueError):
            raise ValueError(f"object {i} ({name}): <bndbox> needs numeric xmin, ymin, xmax, ymax") from None
        names.append(name)
    return boxes, names


def read_voc(root: str | Path, classes: Sequence[str] | None = None) -> DetectionSet:
    """Every annotated image under ``root``, sorted by stem (images without an XML file are not
    part of the set). ``classes`` fixes the label order (objects of other classes are ignored)."""
    root = Path(root)
    dirs = voc_dirs(root)
    if dirs is None:
        raise DataError(f"{root}: not a VOC layout (expected images/ or JPEGImages/ next to annotations/ or Annotations/)")
    image_dir, annotation_dir = dirs
    images = {p.stem: p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    issues: list[DataIssue] = []
    parsed = []
    for xml_path in sorted(annotation_dir.glob("*.xml"), key=lambda p: p.stem):
        if xml_path.stem not in images:
            issues.append(DataIssue(xml_path, f"no image {xml_path.stem}.* in {image_dir}"))
            continue
        try:
            boxes, names = _parse(xml_path)
        except ValueError as exc:
            issues.append(DataIssue(xml_path, str(exc)))
            continue
        parsed.append((images[xml_path.stem], xml_path, boxes, names))
    found = sorted({n for *_, names in parsed for n in names})
    index = {n: i for i, n in enumerate(found)}
    samples = [make_sample(image, boxes, [index[n] for n in names], xml_path, issues)
               for image, xml_path, boxes, names in parsed]
    data = DetectionSet([s for s in samples if s is not None], tuple(found), str(root), "voc", issues)
    return data.select_classes(classes) if classes else data
