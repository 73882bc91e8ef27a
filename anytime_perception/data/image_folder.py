"""Small-image classification sets in the image-folder layout (CIFAR-10, GTSRB at 32x32).

Layout, as a zip archive or a directory: ``<split>/<class>/<file>.jpg|png|ppm`` with split
``train`` or ``test``; the class is the folder name and classes are sorted by name. Images are
decoded once with OpenCV and resized to ``size`` if needed; the decoded arrays are cached as an
``.npz`` (loaded with ``allow_pickle=False``) next to ``cache_dir`` so later runs start at once.
Pure numpy/OpenCV, no torch.
"""
from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import cv2
import numpy as np

__all__ = ["ImageSet", "load_image_folder"]

SPLITS = ("train", "test")
SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp")


@dataclass(frozen=True)
class ImageSet:
    """Images [N, size, size, 3] uint8 RGB, labels [N] int64, class names by label id."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, count: int, seed: int = 0) -> "ImageSet":
        """A deterministic random subset of ``count`` images (all of them if ``count`` >= N)."""
        if count >= len(self):
            return self
        index = np.sort(np.random.default_rng(seed).permutation(len(self))[:count])
        return ImageSet(self.images[index], self.labels[index], self.classes)

    def halves(self, seed: int = 0) -> tuple["ImageSet", "ImageSet"]:
        """A deterministic random split in two halves: (calibration, evaluation) of a test set."""
        order = np.random.default_rng(seed).permutation(len(self))
        first, second = np.sort(order[: len(self) // 2]), np.sort(order[len(self) // 2:])
        return (ImageSet(self.images[first], self.labels[first], self.classes),
                ImageSet(self.images[second], self.labels[second], self.classes))


def _members(source: Path, split: str) -> Iterator[tuple[str, str, bytes]]:
    """(class name, file name, encoded bytes) of every image of ``split``."""
    if source.is_dir():
        for path in sorted((source / split).glob("*/*")):
            if path.suffix.lower() in SUFFIXES:
                yield path.parent.name, path.name, path.read_bytes()
        return
    with zipfile.ZipFile(source) as archive:
        for name in sorted(archive.namelist()):
            parts = PurePosixPath(name).parts
            # tolerate one top-level folder around train/ and test/
            if split not in parts or PurePosixPath(name).suffix.lower() not in SUFFIXES:
                continue
            at = parts.index(split)
            if len(parts) - at == 3:  # <split>/<class>/<file>
                yield parts[at + 1], parts[at + 2], archive.read(name)


def _decode(source: Path, split: str, size: int) -> ImageSet:
    images, names = [], []
    for class_name, file_name, data in _members(source, split):
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{source}: {split}/{class_name}/{file_name} is not a readable image")
        if image.shape[:2] != (size, size):
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        names.append(class_name)
    if not images:
        raise ValueError(f"{source}: no images under {split}/<class>/ (expected {', '.join(SUFFIXES)})")
    classes = tuple(sorted(set(names)))
    lookup = {c: i for i, c in enumerate(classes)}
    return ImageSet(np.stack(images), np.array([lookup[n] for n in names], np.int64), classes)


def _cache_path(source: Path, split: str, size: int, cache_dir: Path) -> Path:
    stat = source.stat()
    key = hashlib.sha1(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{split}|{size}".encode()).hexdigest()
    return cache_dir / f"{source.stem}-{split}-{size}-{key[:12]}.npz"


def load_image_folder(source: str | Path, split: str, size: int = 32,
                      cache_dir: str | Path | None = "runs/cache") -> ImageSet:
    """Load ``split`` of an image-folder dataset (zip or directory), decoded and cached.

    Args:
        source: the zip archive or the directory holding ``train/`` and ``test/``.
        split: ``"train"`` or ``"test"``.
        size: images are resized to ``size x size`` if they are not already.
        cache_dir: where decoded arrays are kept; ``None`` disables the cache.

    Raises:
        FileNotFoundError: ``source`` does not exist. ValueError: bad split or no/broken images.
    """
    source = Path(source)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not source.exists():
        raise FileNotFoundError(f"dataset not found: {source}")
    cache = _cache_path(source, split, size, Path(cache_dir)) if cache_dir is not None else None
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            return ImageSet(data["images"], data["labels"], tuple(str(c) for c in data["classes"]))
    dataset = _decode(source, split, size)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, images=dataset.images, labels=dataset.labels, classes=np.array(dataset.classes))
        tmp.replace(cache)
    return dataset
