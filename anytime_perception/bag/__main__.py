"""anytime_bag: rosbag2 recordings (MCAP storage) for the anytime node, without a ROS distro.

  anytime_bag make --images ../shared/datasets/road_signs --split val --rate 20 --size 640x480 --out runs/val.mcap
  anytime_bag record --topics /perception/refined /perception/preliminary --out runs/results.mcap
  anytime_bag info runs/val.mcap

A bag is a rosbag2 folder: --out X.mcap writes the folder X/ (X/X.mcap + X/metadata.yaml, what
`ros2 bag info X` and `ros2 bag play X` read) and the labels of a labelled set beside it as
X.coco.json. Everywhere a bag is read, X.mcap, the folder X/ or a bare .mcap file will do.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from ..data import DataError, DetectionSet, detect_format, load_split, read_rgb
from ..data.detection import IMAGE_SUFFIXES
from ..data.formats import FORMATS
from .annotations import FrameLabels, frame_labels, write_frame_coco
from .io import BagError, annotations_path, bag_dir, bag_info, parse_size, write_image_bag

__all__ = ["main"]

PROG = "anytime_bag"


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def _labelled_set(args: argparse.Namespace) -> DetectionSet | None:
    """The labelled set --images/--annotations name (its --split), or None for a plain folder."""
    images = Path(args.images)
    if not images.exists():
        raise BagError(f"{images}: no such image folder or dataset")
    source = Path(args.annotations) if args.annotations else images
    if not args.annotations and args.format == "auto":
        try:
            detect_format(images)
        except DataError:
            return None  # a plain image folder
    fmt = detect_format(source) if args.format == "auto" else args.format
    if args.annotations and fmt != "coco" and images.resolve() != source.resolve():
        print(f"note: a {fmt.upper()} set's images come from its own folders under {source}; --images is not used")
    images_dir = images if fmt == "coco" and args.annotations and images.is_dir() else None
    return load_split(source, args.split or "val", fmt, images=images_dir)


def _folder_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise BagError(f"{folder}: not an image folder (and no --annotations given)")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise BagError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def make(args: argparse.Namespace) -> int:
    if bag_dir(args.out).exists():  # before reading a whole dataset
        raise BagError(f"{bag_dir(args.out)} exists already; remove it or choose another --out")
    data = _labelled_set(args)
    if data is not None:
        samples = data.samples[: args.limit or None]
        paths = [s.image_path for s in samples]
        if data.issues:
            for issue in data.issues:
                print(f"skipped: {issue}", file=sys.stderr)
    else:
        if args.split:
            print(f"note: {args.images} is a plain image folder; --split is not used")
        samples, paths = None, _folder_images(Path(args.images))[: args.limit or None]
    start_ns = round((time.time() if args.start is None else args.start) * 1e9)
    stamps = [start_ns + round(i * 1e9 / args.rate) for i in range(len(paths))]
    truths: list[FrameLabels] = []

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        for i, (path, stamp) in enumerate(zip(paths, stamps)):
            rgb = read_rgb(path)
            if samples is not None:
                if rgb.shape[:2] != samples[i].size:
                    raise BagError(f"{path}: decodes to {rgb.shape[1]}x{rgb.shape[0]} but is annotated as "
                                   f"{samples[i].size[1]}x{samples[i].size[0]} (EXIF rotation?)")
                truths.append(frame_labels(samples[i], stamp, args.size))
            yield stamp, rgb if args.size is None else cv2.resize(rgb, args.size, interpolation=cv2.INTER_AREA)

    bag = write_image_bag(args.out, frames(), topic=args.topic, frame_id=args.frame_id)
    size = "native size" if args.size is None else f"{args.size[0]}x{args.size[1]}"
    print(f"wrote bag {bag.path}/ ({bag.storage_file.name}): {bag.count} frames ({size}) on {args.topic} at "
          f"{args.rate:g} Hz, stamps {stamps[0] / 1e9:.3f} .. {stamps[-1] / 1e9:.3f} s")
    if data is not None:
        coco = write_frame_coco(annotations_path(args.out), data.labels, truths, info={
            "description": f"frames of the rosbag2 bag {bag.path.name} ({PROG} make)", "bag": str(bag.path),
            "topic": args.topic, "source": data.source, "format": data.format, "split": args.split or "val",
            "rate_hz": args.rate, "size": list(args.size) if args.size else None})
        boxes = sum(len(t.labels) for t in truths)
        print(f"wrote annotations {coco}: {len(truths)} images, {boxes} boxes, {len(data.labels)} classes "
              f"[{', '.join(data.labels)}]")
    return 0


def record(args: argparse.Namespace, ros_args: Sequence[str]) -> int:
    from .record import record_topics  # rclpy

    counts = record_topics(args.out, args.topics, args.duration, ros_args)
    summary = ", ".join(f"{topic} {count}" for topic, count in counts.items())
    print(f"wrote bag {bag_dir(args.out)}/: {summary}")
    return 0


def info(args: argparse.Namespace) -> int:
    found = bag_info(args.bag)
    print(f"bag:      {found.path}")
    print(f"messages: {found.message_count}")
    if found.message_count:
        utc = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(found.start_ns / 1e9))
        print(f"start:    {found.start_ns / 1e9:.9f} s ({utc} UTC)")
    print(f"duration: {found.duration_s:.3f} s")
    width = max((len(t) for t in found.topics), default=0)
    for topic, (msgtype, count) in found.topics.items():
        print(f"  {topic:<{width}}  {msgtype}  {count}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{make,record,info}")

    p = commands.add_parser("make", help="a bag of camera frames from an image folder or a labelled set",
                            description="Write image files as sensor_msgs/Image (rgb8) frames into a rosbag2 bag "
                            "(MCAP storage); frame i is stamped start + i / rate (header stamp = log time). With "
                            "labels, their COCO JSON goes beside the bag (X.coco.json for --out X.mcap): each image "
                            "entry carries its frame's stamp_ns, boxes are scaled to --size.")
    p.add_argument("--images", required=True, help="an image folder, or a labelled set's root (VOC folder, YOLO "
                   "folder) or COCO .json; with --annotations a COCO set, the folder its file_name entries are in")
    p.add_argument("--annotations", help="the labels: a COCO .json, a YOLO folder (data.yaml) or a VOC folder "
                   "(images/ + annotations/); default: --images if it is a labelled set")
    p.add_argument("--format", default="auto", choices=FORMATS, help="the labelled set's format (default: detected)")
    p.add_argument("--split", choices=["val", "train", "all"], help="which part of a labelled set, split as the "
                   "training splits it (default: val; a YOLO set's own val split)")
    p.add_argument("--limit", type=_count, default=0, help="only the first N frames (0: all)")
    p.add_argument("--rate", type=_positive, default=20.0, help="frames per second of the stamps (default 20)")
    p.add_argument("--size", type=parse_size, default=(640, 480),
                   help="WxH every frame is resized to (plain resize, boxes scaled alike), or native (default 640x480)")
    p.add_argument("--start", type=float, help="stamp of the first frame, seconds since the epoch (default: now)")
    p.add_argument("--topic", default="/camera/image_raw", help="image topic (default /camera/image_raw)")
    p.add_argument("--frame-id", default="camera", help="header frame_id (default camera)")
    p.add_argument("--out", required=True, help="X.mcap: the bag folder X/ (X/X.mcap + metadata.yaml); must not exist")

    p = commands.add_parser("record", help="record topics of the running graph (e.g. the node's results)",
                            description="Record topics into a new rosbag2 bag (MCAP storage) until Ctrl-C, SIGTERM "
                            "or --duration; messages are stored as received (CDR), stamped with the receive time. "
                            "Each topic is subscribed once a publisher of it is discovered. ROS arguments follow "
                            "--ros-args.")
    p.add_argument("--topics", nargs="+", required=True,
                   help="topics (e.g. /perception/refined /perception/preliminary)")
    p.add_argument("--out", required=True, help="Y.mcap: the bag folder Y/ (Y/Y.mcap + metadata.yaml); must not exist")
    p.add_argument("--duration", type=_positive, default=0.0, help="stop after S seconds (default: until stopped)")

    p = commands.add_parser("info", help="topics, message counts and duration of a bag",
                            description="Topics, message counts and duration of a rosbag2 bag.")
    p.add_argument("bag", help="X.mcap (the bag folder X/ written for it, or a bare .mcap file) or a bag folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    args = build_parser().parse_args(argv[: len(argv) - len(ros_args)])
    try:
        if args.command == "make":
            return make(args)
        if args.command == "record":
            return record(args, ros_args)
        return info(args)
    except (BagError, DataError, OSError) as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
