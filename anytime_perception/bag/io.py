"""Camera frames to and from rosbag2 bags (MCAP storage) through the ``rosbags`` library.

Paths: a rosbag2 bag is a folder with ``metadata.yaml`` and its storage file(s). ``X.mcap`` given
as an output names the folder ``X/`` (``rosbags`` then writes ``X/X.mcap`` into it), so the same
``X.mcap`` works as an input afterwards; as an input, the folder itself, the ``.mcap`` file in it,
its ``metadata.yaml``, or a bare ``.mcap`` file written by another tool are taken too.

Messages are serialised and deserialised with the ``rosbags`` type store of ROS 2 Kilted; the
hashes it computes (RIHS01) equal those of the ROS packages, so ``ros2 bag info/play`` read the
bags. No ROS is needed here except to turn a message into pixels (``decode_rgb``), which uses the
package's one set of conversion rules in ``ros/conversions.py``.
"""
from __future__ import annotations

import argparse
import shutil
import struct
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.rosbag2 import ReaderError, StoragePlugin, Writer, WriterError
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, TypesysError, get_typestore
from rosbags.typesys.store import Typestore

__all__ = ["IMAGE", "COMPRESSED_IMAGE", "IMAGE_TYPES", "BagError", "BagImage", "BagInfo", "WrittenBag", "bag_dir",
           "annotations_path", "resolve_bag", "typestore", "write_image_bag", "read_image_bag", "image_topics",
           "pick_image_topic",
           "bag_info", "decode_rgb", "parse_size"]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
STORE = Stores.ROS2_KILTED
# What a damaged bag raises inside rosbags (its own errors, and those of the parsers under them).
_READ_ERRORS = (ReaderError, AnyReaderError, SerdeError, TypesysError, OSError, ValueError, KeyError, IndexError,
                TypeError, struct.error, EOFError)


class BagError(ValueError):
    """A bag that cannot be read or written as asked; the message names the bag and the problem."""


@dataclass(frozen=True)
class BagImage:
    """One image message of a bag, still serialised.

    ``stamp_ns``: its header stamp; ``log_time_ns``: when it was recorded (the bag's timestamp);
    ``rawdata_cdr``: the CDR bytes as recorded (publish them as they are, or ``decode_rgb``);
    ``msgtype``: ``sensor_msgs/msg/Image`` or ``sensor_msgs/msg/CompressedImage``.
    """

    stamp_ns: int
    log_time_ns: int
    topic: str
    rawdata_cdr: bytes
    msgtype: str


@dataclass(frozen=True)
class WrittenBag:
    """A bag just written: its folder, its storage file and how many frames it holds."""

    path: Path
    storage_file: Path
    count: int


@dataclass(frozen=True)
class BagInfo:
    """What ``anytime_bag info`` shows: topics (name -> (type, messages)), start and end (ns)."""

    path: Path
    topics: dict[str, tuple[str, int]]
    message_count: int
    start_ns: int
    end_ns: int

    @property
    def duration_s(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9 if self.message_count else 0.0


def bag_dir(out: str | Path) -> Path:
    """The bag folder an output path names: ``X.mcap`` -> ``X/``; any other path is the folder."""
    out = Path(out)
    return out.with_suffix("") if out.suffix == ".mcap" else out


def annotations_path(out: str | Path) -> Path:
    """The COCO JSON beside a bag: ``X.coco.json`` for ``X.mcap`` (or for the folder ``X/``)."""
    folder = bag_dir(out)
    return folder.with_name(folder.name + ".coco.json")


def resolve_bag(path: str | Path) -> Path:
    """The path to open for a bag given as its folder, ``X.mcap`` (the folder ``X/`` written for
    it, or the file), its ``metadata.yaml`` or a bare ``.mcap`` file; ``BagError`` if none exists."""
    path = Path(path)
    if path.name == "metadata.yaml" and path.is_file():
        path = path.parent
    if path.is_dir():
        if not (path / "metadata.yaml").is_file():
            raise BagError(f"{path}: not a rosbag2 bag (a bag is a folder with metadata.yaml and its .mcap or .db3 "
                           "file; metadata.yaml is missing)")
        return path
    if path.is_file():
        if path.suffix != ".mcap":
            raise BagError(f"{path}: not a rosbag2 bag (give the bag's folder or its .mcap file)")
        return path.parent if (path.parent / "metadata.yaml").is_file() else path
    if path.suffix == ".mcap" and bag_dir(path).is_dir():
        return resolve_bag(bag_dir(path))
    raise BagError(f"{path}: no such bag (neither a rosbag2 folder nor an .mcap file)")


def typestore() -> Typestore:
    """A fresh ROS 2 Kilted type store (callers may register more types in it)."""
    return get_typestore(STORE)


@lru_cache(maxsize=1)
def _shared_store() -> Typestore:
    """One Kilted type store for deserialising standard messages (never registered into)."""
    return typestore()


def write_image_bag(path: str | Path, frames: Iterable[tuple[int, np.ndarray]], topic: str = "/camera/image_raw",
                    frame_id: str = "camera") -> WrittenBag:
    """Write ``frames`` ((stamp ns, RGB uint8 [H, W, 3]) pairs) as rgb8 ``sensor_msgs/Image``
    messages on ``topic`` into a new rosbag2 bag with MCAP storage at ``bag_dir(path)``.

    Each message's header stamp and its log time in the bag are the frame's stamp. The bag must
    not exist yet; if anything fails midway, the half-written bag is removed.
    """
    folder = bag_dir(path)
    if folder.exists():
        raise BagError(f"{folder} exists already; remove it or choose another output")
    store = typestore()
    Image, Header, Time = (store.types[t] for t in (IMAGE, "std_msgs/msg/Header", "builtin_interfaces/msg/Time"))
    writer = Writer(folder, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP)
    try:
        writer.open()
    except (WriterError, OSError) as exc:
        raise BagError(f"{folder}: cannot create the bag ({exc})") from None
    count = 0
    try:
        connection = writer.add_connection(topic, IMAGE, typestore=store)
        for stamp_ns, rgb in frames:
            rgb = np.asarray(rgb)
            if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or not rgb.size:
                raise BagError(f"{folder}: frame {count} is {rgb.dtype} {rgb.shape}, expected RGB uint8 [H, W, 3]")
            if int(stamp_ns) < 0:
                raise BagError(f"{folder}: frame {count} has a negative stamp {stamp_ns}")
            h, w = rgb.shape[:2]
            stamp = Time(sec=int(stamp_ns) // 1_000_000_000, nanosec=int(stamp_ns) % 1_000_000_000)
            msg = Image(header=Header(stamp=stamp, frame_id=frame_id), height=h, width=w,
                        encoding="rgb8", is_bigendian=0, step=w * 3, data=np.ascontiguousarray(rgb).reshape(-1))
            writer.write(connection, int(stamp_ns), store.serialize_cdr(msg, IMAGE))
            count += 1
        if not count:
            raise BagError(f"{folder}: no frames to write")
        writer.close()
    except BaseException:
        with suppress(Exception):
            writer.abort()
        shutil.rmtree(folder, ignore_errors=True)  # ours: Writer.open refuses an existing path
        raise
    return WrittenBag(folder, folder / f"{folder.name}.mcap", count)


@contextmanager
def _open(path: str | Path) -> Iterator[tuple[Path, AnyReader]]:
    """An open reader of the bag at ``path``; damaged bags become a ``BagError`` naming them."""
    bag = resolve_bag(path)
    try:
        reader = AnyReader([bag], default_typestore=_shared_store())
        reader.open()
    except _READ_ERRORS as exc:
        raise BagError(f"{bag}: cannot read the bag ({type(exc).__name__}: {exc})") from None
    try:
        yield bag, reader
    finally:
        with suppress(Exception):
            reader.close()


def _image_topics(reader: AnyReader) -> dict[str, str]:
    return {name: info.msgtype for name, info in reader.topics.items() if info.msgtype in IMAGE_TYPES}


def image_topics(path: str | Path) -> dict[str, str]:
    """The bag's image topics (``sensor_msgs/msg/Image`` or ``CompressedImage``): name -> type."""
    with _open(path) as (_, reader):
        return _image_topics(reader)


def _pick_topic(bag: Path, reader: AnyReader, topic: str | None) -> str:
    images = _image_topics(reader)
    if topic is not None:
        if topic in images:
            return topic
        if topic in reader.topics:
            raise BagError(f"{bag}: topic {topic} holds {reader.topics[topic].msgtype}, not images; image topics: "
                           f"{', '.join(images) or 'none'}")
        raise BagError(f"{bag}: no topic {topic}; image topics: {', '.join(images) or 'none'}")
    if len(images) == 1:
        return next(iter(images))
    if not images:
        others = ", ".join(f"{n} ({i.msgtype})" for n, i in reader.topics.items()) or "none"
        raise BagError(f"{bag}: no image topic (sensor_msgs/msg/Image or CompressedImage); its topics: {others}")
    raise BagError(f"{bag}: several image topics, say which one: {', '.join(sorted(images))}")


def pick_image_topic(path: str | Path, topic: str | None = None) -> tuple[str, str]:
    """(topic, message type) of the bag's image topic ``topic``, or of its only one if None;
    ``BagError`` listing the image topics if there is no such topic, or several or none."""
    with _open(path) as (bag, reader):
        topic = _pick_topic(bag, reader, topic)
        return topic, reader.topics[topic].msgtype


def read_image_bag(path: str | Path, topic: str | None = None) -> Iterator[BagImage]:
    """The image messages of ``topic`` in bag order (log time), as ``BagImage``.

    ``topic`` defaults to the bag's only image topic (``sensor_msgs/msg/Image`` or
    ``CompressedImage``); a ``BagError`` lists the image topics if there are several or none.
    """
    with _open(path) as (bag, reader):
        topic = _pick_topic(bag, reader, topic)
        connections = [c for c in reader.connections if c.topic == topic]
        index = 0
        messages = reader.messages(connections=connections)
        while True:
            try:
                item = next(messages, None)
                if item is None:
                    return
                connection, log_time, raw = item
                header = reader.deserialize(raw, connection.msgtype).header
            except _READ_ERRORS as exc:
                raise BagError(f"{bag}: message {index} on {topic} cannot be read "
                               f"({type(exc).__name__}: {exc})") from None
            yield BagImage(header.stamp.sec * 1_000_000_000 + header.stamp.nanosec, int(log_time), topic, bytes(raw),
                           connection.msgtype)
            index += 1


def bag_info(path: str | Path) -> BagInfo:
    """Topics (name -> (type, message count)), message count, first and last log time (ns)."""
    with _open(path) as (bag, reader):
        topics = {name: (info.msgtype, int(info.msgcount)) for name, info in sorted(reader.topics.items())}
        count = int(reader.message_count)
        return BagInfo(bag, topics, count, int(reader.start_time) if count else 0,
                       int(reader.end_time) - 1 if count else 0)  # rosbags' end is exclusive (last + 1 ns)


def decode_rgb(image: BagImage) -> np.ndarray:
    """RGB uint8 [H, W, 3] of a bag image, by the node's own conversion rules (any encoding the
    node accepts, JPEG/PNG for ``CompressedImage``); ``BagError`` naming the topic and stamp if
    the message cannot be used.

    Deserialised with the rosbags type store rather than ``rclpy.serialization``: it needs no
    ROS type support, reads the pixels without copying them, and the conversion functions only
    read the message's fields (``encoding``, ``height``, ``width``, ``step``, ``data``, ...), which
    the rosbags message has under the same names.
    """
    from ..ros.conversions import ImageError, compressed_to_rgb, image_to_rgb  # ROS message packages

    where = f"{image.topic} at stamp {image.stamp_ns / 1e9:.9f} s"
    try:
        msg = _shared_store().deserialize_cdr(image.rawdata_cdr, image.msgtype)
    except _READ_ERRORS as exc:
        raise BagError(f"{where}: cannot deserialise the {image.msgtype} ({type(exc).__name__}: {exc})") from None
    try:
        return compressed_to_rgb(msg) if image.msgtype == COMPRESSED_IMAGE else image_to_rgb(msg)
    except ImageError as exc:
        raise BagError(f"{where}: {exc}") from None


def parse_size(text: str) -> tuple[int, int] | None:
    """``640x480`` -> (640, 480); ``native`` -> None (frames keep their image's size)."""
    if text == "native":
        return None
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH (e.g. 640x480) or native, got {text!r}") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"width and height must be positive, got {text!r}")
    return width, height
