"""Replay node: publishes frames from an image folder, a road_signs dataset root or a video.

``anytime_replay --source ../shared/datasets/road_signs --rate 10 --size 640x480``
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ..data import DataError, detect_format, load_split, read_rgb
from ..data.detection import IMAGE_SUFFIXES
from .conversions import rgb_to_image

__all__ = ["ReplayNode", "frame_source", "main"]


def _is_dataset(source: Path) -> bool:
    """A labelled detection set (COCO JSON, YOLO or VOC layout) rather than a video or a folder."""
    try:
        detect_format(source)
    except DataError:
        return False
    return True


def frame_source(source: str | Path, size: tuple[int, int] | None) -> Iterator[np.ndarray]:
    """RGB frames from a video file, a detection set (its validation split) or an image folder.

    ``size`` (width, height) resizes every frame (the camera's resolution); None keeps it.
    """
    source = Path(source)
    if _is_dataset(source):
        images = (read_rgb(s.image_path) for s in load_split(source, "val"))
    elif source.is_file():
        capture = cv2.VideoCapture(str(source))
        frames = iter(lambda: capture.read(), (False, None))
        images = (cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for ok, f in frames if ok)
    elif source.is_dir():
        images = (read_rgb(p) for p in sorted(source.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise FileNotFoundError(f"replay source {source} is neither a video, an image folder nor a dataset root")
    for image in images:
        yield image if size is None else cv2.resize(image, size, interpolation=cv2.INTER_AREA)


class ReplayNode(Node):
    """Publishes ``frames`` on ``camera/image_raw`` (relative: remap or namespace it) at ``rate`` Hz,
    then stops (``done`` is set)."""

    def __init__(self, frames: Iterator[np.ndarray], rate: float, limit: int = 0,
                 reliable: bool = False, frame_id: str = "camera") -> None:
        super().__init__("anytime_replay")
        qos = QoSProfile(depth=1, history=qos_profile_sensor_data.history,
                         reliability=QoSReliabilityPolicy.RELIABLE if reliable else QoSReliabilityPolicy.BEST_EFFORT)
        self.publisher = self.create_publisher(Image, "camera/image_raw", qos)
        self.frames, self.limit, self.frame_id = frames, limit, frame_id
        self.published = 0
        self.done = False
        self.timer = self.create_timer(1.0 / rate, self.timer_callback)

    def timer_callback(self) -> None:
        frame = next(self.frames, None) if not self.limit or self.published < self.limit else None
        if frame is None:
            self.done = True
            self.timer.cancel()
            return
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.frame_id)
        self.publisher.publish(rgb_to_image(frame, header))
        self.published += 1


def parse_size(text: str) -> tuple[int, int] | None:
    """``640x480`` -> (640, 480); ``native`` -> None."""
    if text == "native":
        return None
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    """The replay options shared by ``anytime_replay`` and ``anytime_demo``."""
    parser.add_argument("--source", required=True, help="video file, image folder or road_signs root")
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second")
    parser.add_argument("--size", type=parse_size, default=(640, 480), help="WxH or 'native'")
    parser.add_argument("--frames", type=int, default=0, help="stop after N frames (0: all)")
    parser.add_argument("--reliable", action="store_true", help="reliable QoS instead of best effort")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_replay_arguments(parser)
    args, ros_args = parser.parse_known_args(argv)
    rclpy.init(args=ros_args)
    node = ReplayNode(frame_source(args.source, args.size), args.rate, args.frames, args.reliable)
    try:
        while rclpy.ok() and not node.done:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
