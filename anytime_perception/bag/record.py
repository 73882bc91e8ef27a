"""Record topics of a running ROS graph (the node's results, its camera, ...) into a rosbag2 bag
with MCAP storage: rclpy receives the messages still serialised, rosbags writes them.

A bag needs each type's definition (``msgdef``) and hash: types of ROS 2 Kilted come from the
rosbags type store; others (this package's ``DetectionArray``, ``vision_msgs``) are read from the
``.msg`` files their packages install under ``share/<package>/msg/`` and registered in the store
with ``get_types_from_msg``, together with the types they use.
"""
from __future__ import annotations

import importlib
import time
from contextlib import suppress
from pathlib import Path
from typing import Callable, Sequence

from rosbags.interfaces import Nodetype
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.typesys import TypesysError, get_types_from_msg
from rosbags.typesys.store import Typestore

from .io import BagError, bag_dir, typestore

__all__ = ["register_msg_type", "record_topics"]

_HERE_MSG = Path(__file__).resolve().parents[2] / "msg"  # a source checkout's msg/ (not installed)


def _msg_file(msgtype: str) -> Path:
    package, kind, name = msgtype.split("/")
    candidates = []
    with suppress(ImportError, LookupError, ValueError):
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(package)) / kind / f"{name}.msg")
    if package == "anytime_perception":
        candidates.append(_HERE_MSG / f"{name}.msg")
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise BagError(f"no definition of {msgtype}: {kind}/{name}.msg not found in share/{package} "
                       f"(looked at {', '.join(map(str, candidates)) or 'no installed package ' + package})")
    return found


def _names(fieldtype) -> list[str]:
    """The message types a field definition refers to (nested in arrays and sequences)."""
    kind, detail = fieldtype
    if kind == Nodetype.NAME:
        return [detail]
    if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        return _names(detail[0])
    return []


def register_msg_type(store: Typestore, msgtype: str) -> None:
    """Make ``msgtype`` (``pkg/msg/Name``) and the types it uses known to ``store``."""
    if msgtype in store.fielddefs:
        return
    path = _msg_file(msgtype)
    try:
        types = get_types_from_msg(path.read_text(), msgtype)
    except (OSError, TypesysError) as exc:
        raise BagError(f"{path}: cannot parse the definition of {msgtype} ({exc})") from None
    for _, fields in types.values():
        for _, fieldtype in fields:
            for name in _names(fieldtype):
                if name not in types:
                    register_msg_type(store, name)
    store.register(types)


def _message_class(msgtype: str):
    package, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError):
        raise BagError(f"cannot record {msgtype}: its Python message package {package} is not installed") from None


def _subscriber_qos(publishers):
    """Reliable / transient local only if every publisher offers it (as ``ros2 bag record``)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    offered = [p.qos_profile for p in publishers]
    reliable = bool(offered) and all(q.reliability == ReliabilityPolicy.RELIABLE for q in offered)
    latched = bool(offered) and all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in offered)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def record_topics(out: str | Path, topics: Sequence[str], duration_s: float = 0.0, ros_args: Sequence[str] = (),
                  log: Callable[[str], None] = print) -> dict[str, int]:
    """Record ``topics`` into a new bag at ``bag_dir(out)`` until Ctrl-C, SIGTERM or
    ``duration_s`` (0: no limit); returns the message count per topic.

    Each topic is subscribed as soon as it is discovered with a publisher (with the QoS its
    publishers offer), its messages written as received, stamped with the receive time. The bag
    is closed (MCAP summary and metadata.yaml written) however recording ends.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.node import Node

    topics = list(dict.fromkeys(t if t.startswith("/") else "/" + t for t in topics))
    if not topics:
        raise BagError("no topics to record")
    folder = bag_dir(out)
    if folder.exists():
        raise BagError(f"{folder} exists already; remove it or choose another output")
    store = typestore()
    writer = Writer(folder, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP)
    counts = {t: 0 for t in topics}
    rclpy.init(args=["anytime_bag", *ros_args])
    node = Node("anytime_bag_record")
    try:
        writer.open()
    except (WriterError, OSError) as exc:
        node.destroy_node()
        rclpy.try_shutdown()
        raise BagError(f"{folder}: cannot create the bag ({exc})") from None
    pending = set(topics)
    reported: set[str] = set()

    def write(connection, topic: str, data: bytes) -> None:
        writer.write(connection, node.get_clock().now().nanoseconds, data)
        counts[topic] += 1

    def discover_callback() -> None:
        found = dict(node.get_topic_names_and_types())
        for topic in sorted(pending):
            publishers = node.get_publishers_info_by_topic(topic) if topic in found else []
            if not publishers:
                continue
            msgtype = found[topic][0]
            try:
                cls = _message_class(msgtype)
                register_msg_type(store, msgtype)
            except BagError as exc:
                if topic not in reported:
                    log(f"not recording {topic}: {exc}")
                    reported.add(topic)
                continue
            connection = writer.add_connection(topic, msgtype, typestore=store)
            node.create_subscription(cls, topic, lambda data, c=connection, t=topic: write(c, t, data),
                                     _subscriber_qos(publishers), raw=True)
            pending.discard(topic)
            log(f"recording {topic} ({msgtype})")

    node.create_timer(0.2, discover_callback)
    end = time.monotonic() + duration_s if duration_s > 0 else None
    try:
        discover_callback()
        while rclpy.ok() and (end is None or time.monotonic() < end):
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        writer.close()
        node.destroy_node()
        rclpy.try_shutdown()
    for topic in sorted(pending):
        log(f"note: {topic} never appeared with a publisher; nothing recorded from it")
    return counts
