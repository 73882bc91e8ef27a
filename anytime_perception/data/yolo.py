"""Ultralytics/YOLO layout: ``DIR/data.yaml`` (``path``, ``train``, ``val``, ``names``) and one
``labels/.../<stem>.txt`` per ``images/.../<stem>.jpg`` with lines ``class cx cy w h`` normalised
to the image size. An image without a label file is a background image (no objects)."""
from __future__ import annotations

from pathlib import Path

import yaml

from .detection import IMAGE_SUFFIXES, DataError, DataIssue, DetectionSet, image_size, make_sample

__all__ = ["read_yolo", "is_yolo", "yolo_yaml", "yolo_splits"]


def yolo_yaml(path: Path) -> Path | None:
    """The data.yaml of a YOLO set given as the folder or the yaml itself, or None."""
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        return path
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        if (path / name).is_file():
            return path / name
    return None


def is_yolo(path: Path) -> bool:
    return yolo_yaml(path) is not None


def _config(yaml_path: Path) -> tuple[dict, Path, tuple[str, ...]]:
    try:
        cfg = yaml.safe_load(yaml_path.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"{yaml_path}: not valid YAML ({exc})") from None
    if not isinstance(cfg, dict):
        raise DataError(f"{yaml_path}: expected a mapping with path, train, val and names")
    names = cfg.get("names")
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise DataError(f"{yaml_path}: 'names' keys must be the class ids 0..{len(names) - 1}, got {sorted(names)}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names or not all(str(n).strip() for n in names):
        raise DataError(f"{yaml_path}: 'names' must be a non-empty list (or dict id -> name) of class names")
    names = tuple(str(n).strip() for n in names)
    if len(set(names)) != len(names):
        raise DataError(f"{yaml_path}: class names in 'names' are not unique")
    if "nc" in cfg and cfg["nc"] != len(names):
        raise DataError(f"{yaml_path}: nc is {cfg['nc']} but 'names' has {len(names)} entries")
    root = Path(cfg.get("path") or ".")
    if not root.is_absolute():
        root = yaml_path.parent / root
    return cfg, root, names


def yolo_splits(path: Path) -> tuple[str, ...]:
    """The splits the data.yaml names (``train``, ``val``, ``test``)."""
    cfg, _, _ = _config(yolo_yaml(path))
    return tuple(s for s in ("train", "val", "test") if cfg.get(s))


def _images(root: Path, entry, yaml_path: Path) -> list[Path]:
    """Image files of one split entry: a folder, a .txt list of images, or a list of either."""
    entries = entry if isinstance(entry, list) else [entry]
    out: list[Path] = []
    for e in entries:
        p = Path(str(e))
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file() and p.suffix == ".txt":
            lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
            out += [Path(ln) if Path(ln).is_absolute() else (root / ln) for ln in lines]
        else:
            raise DataError(f"{yaml_path}: split entry {e!r} is neither a folder nor a .txt list of images "
                            f"(looked for {p})")
    return out


def _label_path(image: Path) -> Path:
    """``.../images/<sub>/<stem>.jpg`` -> ``.../labels/<sub>/<stem>.txt`` (last ``images`` part)."""
    parts = list(image.parts)
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        parts[i] = "labels"
    return Path(*parts).with_suffix(".txt")


def _parse(label: Path, num_classes: int, size: tuple[int, int]) -> tuple[list, list]:
    h, w = size
    boxes, classes = [], []
    for n, line in enumerate(label.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise ValueError(f"line {n}: expected 'class cx cy w h', got {line.strip()!r}"
                             + (" (segments are not supported)" if len(fields) > 5 else ""))
        try:
            c, cx, cy, bw, bh = int(fields[0]), *map(float, fields[1:])
        except ValueError:
            raise ValueError(f"line {n}: not numbers: {line.strip()!r}") from None
        if not 0 <= c < num_classes:
            raise ValueError(f"line {n}: class {c} is not in 0..{num_classes - 1} (data.yaml names)")
        if not all(-0.01 <= v <= 1.01 for v in (cx, cy, bw, bh)):
            raise ValueError(f"line {n}: coordinates must be normalised to 0..1, got {cx} {cy} {bw} {bh}")
        boxes.append([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
        classes.append(c)
    return boxes, classes


def read_yolo(path: str | Path, split: str) -> DetectionSet:
    """The ``split`` (train, val or test) of a YOLO set, images sorted by path."""
    path = Path(path)
    yaml_path = yolo_yaml(path)
    if yaml_path is None:
        raise DataError(f"{path}: no data.yaml (YOLO layout)")
    cfg, root, names = _config(yaml_path)
    if not cfg.get(split):
        raise DataError(f"{yaml_path}: has no '{split}' split")
    issues: list[DataIssue] = []
    samples = []
    for image in _images(root, cfg[split], yaml_path):
        label = _label_path(image)
        size = image_size(image)
        if isinstance(size, str):
            issues.append(DataIssue(image, size))
            continue
        boxes, classes = [], []
        if label.is_file():
            try:
                boxes, classes = _parse(label, len(names), size)
            except (ValueError, UnicodeDecodeError) as exc:
                issues.append(DataIssue(label, str(exc)))
                continue
        sample = make_sample(image, boxes, classes, label, issues, size)
        if sample is not None:
            samples.append(sample)
    return DetectionSet(samples, names, f"{yaml_path}:{split}", "yolo", issues)
