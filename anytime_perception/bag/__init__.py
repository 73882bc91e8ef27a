"""rosbag2 recordings without a ROS distro, through the ``rosbags`` library: camera frames in
(``write_image_bag``, ``anytime_bag make``), frames out (``read_image_bag``, ``anytime_replay
--bag``), the node's results recorded (``anytime_bag record``).

A bag is a rosbag2 folder (``metadata.yaml`` + one MCAP file), as ``ros2 bag`` writes it;
``--out X.mcap`` names the folder ``X/`` (holding ``X/X.mcap``), and the labels of a labelled set
go beside it as ``X.coco.json``. No torch; rclpy only inside the record function.
"""
from .annotations import FrameLabels, frame_labels, write_frame_coco
from .io import (IMAGE_TYPES, BagError, BagImage, BagInfo, WrittenBag, annotations_path, bag_dir, bag_info,
                 decode_rgb, image_topics, pick_image_topic, read_image_bag, resolve_bag, write_image_bag)

__all__ = ["IMAGE_TYPES", "BagError", "BagImage", "BagInfo", "WrittenBag", "annotations_path", "bag_dir", "bag_info",
           "decode_rgb", "image_topics", "pick_image_topic", "read_image_bag", "resolve_bag", "write_image_bag",
           "FrameLabels", "frame_labels", "write_frame_coco"]
