"""The standard output: ``vision_msgs/Detection2DArray``, one message per frame with its final
result, as trackers and fusion nodes (Isaac ROS, depthai, ...) consume it.

Per detection: one hypothesis whose ``class_id`` is the label string and whose score is the
detection's, and the box centre and size in pixels of the incoming image. ``vision_msgs`` is
optional: where it is not installed, ``AVAILABLE`` is False and the node runs without it.
"""
from __future__ import annotations

from typing import Sequence

from std_msgs.msg import Header

from ..runtime import Detection

try:
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose
except ImportError:  # a ROS install without vision_msgs
    Detection2D = Detection2DArray = ObjectHypothesisWithPose = None

__all__ = ["AVAILABLE", "Detection2DArray", "to_detection2d_array"]

AVAILABLE = Detection2DArray is not None


def to_detection2d_array(detections: Sequence[Detection], header: Header) -> "Detection2DArray":
    """A frame's detections as a ``Detection2DArray`` stamped with the image's header."""
    out = Detection2DArray(header=header)
    for d in detections:
        item = Detection2D(header=header)
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = d.label
        hypothesis.hypothesis.score = float(d.score)
        item.results.append(hypothesis)
        item.bbox.center.position.x = float(d.center_x)
        item.bbox.center.position.y = float(d.center_y)
        item.bbox.size_x = float(d.width)
        item.bbox.size_y = float(d.height)
        out.detections.append(item)
    return out
