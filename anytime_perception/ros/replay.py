"""Replay: publishes camera frames from an image folder, a labelled set's validation split, a video
or a rosbag2 bag.

  anytime_replay --source ../shared/datasets/road_signs --rate 10 --size 640x480
  anytime_replay --bag runs/val.mcap                   # the bag's log times, its stamps, its topic
  anytime_replay --bag runs/val.mcap --rate 20 --loop  # a fixed rate instead

--source frames are stamped with the time they are sent and published on camera/image_raw
(relative: remap or namespace it). --bag frames keep their recorded messages, header stamps
included (results are joined to a recording's annotations by stamp; a --loop repeats them), and go
out on the bag's topic (--topic-remap FROM:=TO to change it), timed by the bag's log times
(--rate-scale) or at a fixed --rate.
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import rclpy
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ..bag.io import COMPRESSED_IMAGE, BagError, decode_rgb, parse_size, pick_image_topic, read_image_bag, resolve_bag
from ..data import DataError, detect_format, load_split, read_rgb
from ..data.detection import IMAGE_SUFFIXES
from .conversions import rgb_to_image

__all__ = ["ReplayNode", "frame_source", "play_bag", "replay_qos", "main"]


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


def replay_qos(reliable: bool = False) -> QoSProfile:
    """The replay's publisher QoS: keep last 1, best effort (as a camera driver) or reliable."""
    return QoSProfile(depth=1, history=qos_profile_sensor_data.history,
                      reliability=QoSReliabilityPolicy.RELIABLE if reliable else QoSReliabilityPolicy.BEST_EFFORT)


class ReplayNode(Node):
    """Publishes ``frames`` on ``camera/image_raw`` (relative: remap or namespace it) at ``rate`` Hz,
    then stops (``done`` is set)."""

    def __init__(self, frames: Iterator[np.ndarray], rate: float, limit: int = 0,
                 reliable: bool = False, frame_id: str = "camera") -> None:
        super().__init__("anytime_replay")
        self.publisher = self.create_publisher(Image, "camera/image_raw", replay_qos(reliable))
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


def _sleep_until(deadline: float, should_stop: Callable[[], bool]) -> bool:
    """Sleep until ``time.perf_counter()`` reaches ``deadline`` in short slices; False if told to stop."""
    while True:
        if should_stop():
            return False
        left = deadline - time.perf_counter()
        if left <= 0:
            return True
        time.sleep(min(left, 0.05))


def play_bag(target: Node | Publisher, path: str | Path, *, topic: str | None = None, out_topic: str | None = None,
             rate_hz: float | None = None, rate_scale: float = 1.0, loop: bool = False, limit: int = 0,
             reliable: bool = False, wait_for_subscriber_s: float = 0.0,
             on_publish: Callable[[int, float], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> int:
    """Publish a bag's image messages as recorded (CDR bytes, original header stamps); blocks until
    the bag (every pass of a ``loop``) is played, ``limit`` frames are out, or ``should_stop()``.

    Args:
        target: a Node, on which a publisher is created (``out_topic``, default the bag topic's own
            name; QoS ``replay_qos(reliable)``), or a Publisher of the bag's message type
            (``sensor_msgs/Image`` or ``CompressedImage``) to publish on as it is.
        path: the bag (``X.mcap`` as given to ``anytime_bag make``, the bag folder, or an .mcap file).
        topic: the bag's image topic to play; default its only one (``BagError`` if several/none).
        rate_hz: publish at this fixed rate (frame i at i / rate_hz s); None: at the bag's log
            times, ``rate_scale`` times as fast (2.0: twice real time).
        loop: play the bag again and again (the same stamps each pass) until ``limit`` or stopped;
            a pass follows the last one after the bag's mean frame interval.
        limit: stop after this many frames in all (0: no limit).
        wait_for_subscriber_s: before the first frame, wait up to this long for a subscriber to
            match (a best-effort frame sent before then is lost); playback starts either way.
        on_publish: called as ``on_publish(stamp_ns, publish_time)`` right before each frame is
            handed to the middleware, with the frame's header stamp and ``time.perf_counter()``
            (CLOCK_MONOTONIC on Linux: comparable with other processes' on the same machine).
        should_stop: polled between frames and while waiting (default: the target node's context
            is shut down; never for a bare Publisher).

    Frames are read from disk while waiting for their turn; the schedule has no drift (absolute
    deadlines), and a frame that is late goes out at once (none is skipped). Safe to call from a
    thread other than the one spinning the target node; a publisher it creates on a Node is
    destroyed when it returns. Returns the number of frames published.
    """
    if rate_hz is not None and not rate_hz > 0:
        raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
    if not rate_scale > 0:
        raise ValueError(f"rate_scale must be > 0, got {rate_scale}")
    topic, msgtype = pick_image_topic(path, topic)
    msg_type = CompressedImage if msgtype == COMPRESSED_IMAGE else Image
    if isinstance(target, Node):
        publisher = target.create_publisher(msg_type, out_topic or topic, replay_qos(reliable))
        stop = should_stop or (lambda: not target.context.ok())
    else:
        if target.msg_type is not msg_type:
            raise BagError(f"{resolve_bag(path)}: {topic} holds {msgtype}, the publisher's type is "
                           f"{target.msg_type.__name__}")
        publisher, stop = target, should_stop or (lambda: False)
    try:
        return _play(publisher, path, topic, rate_hz, rate_scale, loop, limit, wait_for_subscriber_s, on_publish, stop)
    finally:
        if publisher is not target:  # ours: reliable frames acknowledged first (best effort: at once)
            with suppress(Exception):
                publisher.wait_for_all_acked(Duration(seconds=1.0))
            target.destroy_publisher(publisher)


def _play(publisher: Publisher, path: str | Path, topic: str, rate_hz: float | None, rate_scale: float, loop: bool,
          limit: int, wait_for_subscriber_s: float, on_publish: Callable[[int, float], None] | None,
          stop: Callable[[], bool]) -> int:
    end = time.perf_counter() + wait_for_subscriber_s
    while publisher.get_subscription_count() == 0 and time.perf_counter() < end:
        if not _sleep_until(min(time.perf_counter() + 0.05, end), stop):
            return 0
    published, start, pass_offset = 0, time.perf_counter(), 0.0
    while not stop():
        first_log = last_log = None
        count = 0
        for item in read_image_bag(path, topic):
            if limit and published >= limit:
                return published
            first_log = item.log_time_ns if first_log is None else first_log
            last_log = item.log_time_ns
            if rate_hz is not None:
                due = start + published / rate_hz
            else:
                due = start + pass_offset + (item.log_time_ns - first_log) / 1e9 / rate_scale
            if not _sleep_until(due, stop):
                return published
            if on_publish is not None:
                on_publish(item.stamp_ns, time.perf_counter())
            publisher.publish(item.rawdata_cdr)
            published += 1
            count += 1
        if not loop or not count:
            break
        span = (last_log - first_log) / 1e9
        pass_offset += (span + (span / (count - 1) if count > 1 else 0.1)) / rate_scale
    return published


SOURCE_SIZE = (640, 480)  # --source frames are resized to this unless --size says otherwise


def parse_remap(text: str) -> tuple[str, str]:
    """``FROM:=TO`` -> (FROM, TO)."""
    source, sep, target = text.partition(":=")
    if not sep or not source.strip() or not target.strip():
        raise argparse.ArgumentTypeError(f"expected FROM:=TO (e.g. /camera/image_raw:=/front/camera/image_raw), "
                                         f"got {text!r}")
    return source.strip(), target.strip()


def add_replay_arguments(parser: argparse.ArgumentParser, bag: bool = False) -> None:
    """The replay options shared by ``anytime_replay`` and ``anytime_demo`` (``bag``: also
    ``--bag`` and its options, as ``anytime_replay`` has them)."""
    if not bag:
        parser.add_argument("--source", required=True, help="video file, image folder or road_signs root")
        parser.add_argument("--rate", type=float, default=10.0, help="frames per second")
        parser.add_argument("--size", type=parse_size, default=SOURCE_SIZE, help="WxH or 'native'")
    else:
        inputs = parser.add_mutually_exclusive_group(required=True)
        inputs.add_argument("--source", help="video file, image folder or labelled set root (its validation split)")
        inputs.add_argument("--bag", help="rosbag2 bag: X.mcap (the folder X/ anytime_bag make wrote), a bag folder "
                            "or an .mcap file")
        parser.add_argument("--rate", type=float, help="frames per second (--source default 10; --bag default: the "
                            "bag's log times)")
        # absent from the namespace unless given: --size with --bag is an error
        parser.add_argument("--size", type=parse_size, default=argparse.SUPPRESS,
                            help="--source: WxH or 'native' (default 640x480)")
        parser.add_argument("--rate-scale", type=float, default=1.0,
                            help="--bag at its log times: play this many times as fast (default 1.0)")
        parser.add_argument("--loop", action="store_true", help="--bag: play it again and again (same stamps)")
        parser.add_argument("--topic-remap", type=parse_remap, metavar="FROM:=TO",
                            help="--bag: play the bag's topic FROM and publish it on TO (default: its only image "
                            "topic, on its own name)")
        parser.add_argument("--wait-subscriber", type=float, default=0.0, metavar="S",
                            help="--bag: wait up to S seconds for a subscriber before the first frame (default 0)")
    parser.add_argument("--frames", type=int, default=0, help="stop after N frames (0: all)")
    parser.add_argument("--reliable", action="store_true", help="reliable QoS instead of best effort")


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Options that apply to one input only; the bag's first frame must be one the node can use."""
    if args.rate is not None and not args.rate > 0:
        parser.error(f"--rate must be > 0, got {args.rate}")
    if args.bag is None:
        given = [o for o, v in (("--rate-scale", args.rate_scale != 1.0), ("--loop", args.loop),
                                ("--topic-remap", args.topic_remap), ("--wait-subscriber", args.wait_subscriber)) if v]
        if given:
            parser.error(f"{', '.join(given)}: only with --bag")
        if not Path(args.source).exists():
            parser.error(f"--source {args.source}: no such video, image folder or dataset")
        return
    if hasattr(args, "size"):
        parser.error("--size resizes --source frames; a bag's frames are played as recorded")
    if not args.rate_scale > 0:
        parser.error(f"--rate-scale must be > 0, got {args.rate_scale}")
    first = next(read_image_bag(args.bag, args.topic_remap[0] if args.topic_remap else None), None)
    if first is None:
        raise BagError(f"{resolve_bag(args.bag)}: no image messages")
    decode_rgb(first)  # BagError naming the encoding if the node could not use it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="anytime_replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_replay_arguments(parser, bag=True)
    args, ros_args = parser.parse_known_args(argv)
    try:
        _check_arguments(parser, args)
    except BagError as exc:
        print(f"anytime_replay: error: {exc}", file=sys.stderr)
        return 1
    rclpy.init(args=ros_args)
    if args.bag is None:
        node = ReplayNode(frame_source(args.source, getattr(args, "size", SOURCE_SIZE)), args.rate or 10.0,
                          args.frames, args.reliable)
    else:
        node = Node("anytime_replay")
    code = 0
    try:
        if args.bag is None:
            while rclpy.ok() and not node.done:
                rclpy.spin_once(node, timeout_sec=0.1)
        else:
            source, target = args.topic_remap or (None, None)
            played = play_bag(node, args.bag, topic=source, out_topic=target, rate_hz=args.rate,
                              rate_scale=args.rate_scale, loop=args.loop, limit=args.frames, reliable=args.reliable,
                              wait_for_subscriber_s=args.wait_subscriber, should_stop=lambda: not rclpy.ok())
            print(f"published {played} frames from {args.bag}")
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (BagError, DataError, OSError) as exc:
        print(f"anytime_replay: error: {exc}", file=sys.stderr)
        code = 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
