"""COCO detection JSON (``instances_*.json``): ``images``, ``annotations``, ``categories``.

Images are found by ``file_name`` relative to the JSON's folder, its ``images/`` subfolder, or an
explicit images folder. Category ids may be non-contiguous: the labels are the category names in
id order and ids map onto them. ``iscrowd`` boxes are ignored. Images without annotations stay in
the set as background images.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from .detection import DataError, DataIssue, DetectionSet, make_sample

__all__ = ["read_coco"]


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a COCO object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: '{key}' missing or not a list (not a COCO detection file?)")
    return data


def _categories(path: Path, categories: list) -> dict[int, str]:
    """Category id -> name, in id order."""
    out = {}
    for i, c in enumerate(categories):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not str(c.get("name", "")).strip():
            raise DataError(f"{path}: categories[{i}] needs an integer 'id' and a 'name'")
        if c["id"] in out:
            raise DataError(f"{path}: category id {c['id']} appears twice")
        out[c["id"]] = str(c["name"]).strip()
    if len(set(out.values())) != len(out):
        raise DataError(f"{path}: category names are not unique")
    return dict(sorted(out.items()))


def _find_image(path: Path, file_name: str, images_dir: Path | None) -> Path:
    """The first existing candidate (or the first candidate, to be reported as missing)."""
    roots = [images_dir] if images_dir else [path.parent, path.parent / "images"]
    candidates = [r / file_name for r in roots] + [r / Path(file_name).name for r in roots]
    return next((c for c in candidates if c.is_file()), candidates[0])


def read_coco(json_path: str | Path, images_dir: str | Path | None = None) -> DetectionSet:
    """The images of one COCO JSON, sorted by file name, with their non-crowd boxes."""
    path = Path(json_path)
    data = _load(path)
    categories = _categories(path, data["categories"])
    label_of = {cid: i for i, cid in enumerate(categories)}
    issues: list[DataIssue] = []
    by_image: dict = defaultdict(list)
    bad_images: set = set()
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann:
            issues.append(DataIssue(path, f"annotations[{i}] has no image_id"))
            continue
        image_id = ann["image_id"]
        if ann.get("iscrowd", 0):
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            issues.append(DataIssue(path, f"annotations[{i}] (id {ann.get('id')}): bbox must be [x, y, w, h] numbers"))
            bad_images.add(image_id)
            continue
        if ann.get("category_id") not in label_of:
            issues.append(DataIssue(path, f"annotations[{i}] (id {ann.get('id')}): unknown category id "
                                                f"{ann.get('category_id')!r}; categories are {list(categories)}"))
            bad_images.add(image_id)
            continue
        x, y, w, h = (float(v) for v in bbox)
        by_image[image_id].append(([x, y, x + w, y + h], label_of[ann["category_id"]]))
    images = data["images"]
    known = {im.get("id") for im in images if isinstance(im, dict)}
    for image_id in sorted(set(by_image) - known, key=str):
        issues.append(DataIssue(path, f"annotations refer to image id {image_id!r}, which is not in 'images'"))
    samples = []
    for i, im in enumerate(sorted((im for im in images if isinstance(im, dict)), key=lambda m: str(m.get("file_name")))):
        if "file_name" not in im or "id" not in im:
            issues.append(DataIssue(path, f"an image entry has no file_name or id: {im}"))
            continue
        if im["id"] in bad_images:
            continue  # its bad annotation is already reported
        anns = by_image.get(im["id"], [])
        image_path = _find_image(path, im["file_name"], Path(images_dir) if images_dir else None)
        sample = make_sample(image_path, [b for b, _ in anns], [c for _, c in anns], path, issues)
        if sample is not None:
            samples.append(sample)
    return DetectionSet(samples, tuple(categories.values()), str(path), "coco", issues)
