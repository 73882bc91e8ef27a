"""rosbag2 recordings: image bags written and read back with rosbags, ``anytime_bag make`` on small
labelled sets (boxes scaled to the frames, stamps in the COCO JSON), clear errors for bad input,
``anytime_replay --bag`` and ``play_bag`` into a real subscriber over DDS, ``anytime_bag record``
of a real node's results."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from sensor_msgs.msg import Image

from anytime_perception.bag import (BagError, annotations_path, bag_info, decode_rgb, read_image_bag, resolve_bag,
                                    write_image_bag)
from anytime_perception.bag.__main__ import main as bag_main
from anytime_perception.bag.io import typestore
from anytime_perception.data import load_split, read_rgb
from anytime_perception.data.writers import write_coco
from anytime_perception.ros.replay import play_bag

from ros_probe import node_and_probe, stop

DOMAIN = 20 + (os.getpid() + 44) % 70
START_NS = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def road_images(road_signs_root) -> list[Path]:
    """Five real road_signs images (of different sizes)."""
    return [s.image_path for s in load_split(road_signs_root, "val")[:5]]


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory, road_images) -> tuple[Path, list[int]]:
    """A 5-frame bag of real images at 320x240, stamps 50 ms apart."""
    out = tmp_path_factory.mktemp("bags") / "small.mcap"
    stamps = [START_NS + i * 50_000_000 for i in range(5)]
    frames = [cv2.resize(read_rgb(p), (320, 240), interpolation=cv2.INTER_AREA) for p in road_images]
    write_image_bag(out, zip(stamps, frames))
    return out, stamps


def _write_bag(folder: Path, topic: str, msgtype: str, messages: list) -> None:
    store = typestore()
    with Writer(folder, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection(topic, msgtype, typestore=store)
        for i, msg in enumerate(messages):
            writer.write(connection, START_NS + i, store.serialize_cdr(msg, msgtype))


def test_image_bag_round_trip_keeps_stamps_sizes_and_pixels(tmp_path, road_images):
    frames = [read_rgb(p) for p in road_images]  # native sizes, not all alike
    stamps = [START_NS + i * 33_333_333 for i in range(len(frames))]
    written = write_image_bag(tmp_path / "round.mcap", zip(stamps, frames), frame_id="cam0")
    assert written.path == tmp_path / "round" and written.count == 5
    assert written.storage_file == tmp_path / "round" / "round.mcap" and written.storage_file.is_file()
    assert (written.path / "metadata.yaml").is_file()
    for given in (tmp_path / "round.mcap", written.path, written.storage_file, written.path / "metadata.yaml"):
        assert resolve_bag(given) == written.path
    items = list(read_image_bag(tmp_path / "round.mcap"))
    assert [i.stamp_ns for i in items] == stamps and [i.log_time_ns for i in items] == stamps
    assert {i.topic for i in items} == {"/camera/image_raw"} and {i.msgtype for i in items} == {"sensor_msgs/msg/Image"}
    for item, frame in zip(items, frames):
        decoded = decode_rgb(item)
        assert decoded.shape == frame.shape and np.array_equal(decoded, frame)
    msg = typestore().deserialize_cdr(items[0].rawdata_cdr, items[0].msgtype)
    assert msg.encoding == "rgb8" and msg.header.frame_id == "cam0" and msg.step == frames[0].shape[1] * 3
    info = bag_info(written.storage_file)  # the bare .mcap file reads alike
    assert info.topics == {"/camera/image_raw": ("sensor_msgs/msg/Image", 5)}
    assert info.start_ns == stamps[0] and info.end_ns == stamps[-1] and info.message_count == 5


def test_rclpy_reads_the_recorded_bytes(small_bag):
    from rclpy.serialization import deserialize_message

    bag, stamps = small_bag
    item = next(read_image_bag(bag))
    msg = deserialize_message(item.rawdata_cdr, Image)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == divmod(stamps[0], 1_000_000_000)
    assert (msg.width, msg.height, msg.encoding) == (320, 240, "rgb8")


def _voc_set(root: Path, road_images: list[Path], size: tuple[int, int]) -> list[tuple[float, float, float, float]]:
    """A 2-image VOC set of real images resized to ``size`` with one known box each."""
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    boxes = [(10.0, 20.0, 60.0, 80.0), (100.0, 30.0, 150.0, 140.0)]
    for i, (path, box) in enumerate(zip(road_images[:2], boxes)):
        cv2.imwrite(str(root / "images" / f"frame{i}.png"), cv2.resize(cv2.imread(str(path)), size))
        x0, y0, x1, y1 = box
        (root / "annotations" / f"frame{i}.xml").write_text(
            f"<annotation><filename>frame{i}.png</filename><object><name>{['stop', 'crosswalk'][i]}</name><bndbox>"
            f"<xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object></annotation>")
    return boxes


def test_make_scales_boxes_to_the_frame_size_and_stamps_the_annotations(tmp_path, road_images, capsys):
    boxes = _voc_set(tmp_path / "voc", road_images, (200, 150))
    out = tmp_path / "out" / "voc.mcap"
    code = bag_main(["make", "--images", str(tmp_path / "voc"), "--split", "all", "--rate", "20", "--size", "400x300",
                     "--start", "1000", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert str(tmp_path / "out" / "voc") in printed and str(tmp_path / "out" / "voc.coco.json") in printed
    items = list(read_image_bag(out))
    assert [i.stamp_ns for i in items] == [1000_000_000_000, 1000_050_000_000]
    assert all(decode_rgb(i).shape == (300, 400, 3) for i in items)
    coco = json.loads(annotations_path(out).read_text())
    assert [c["name"] for c in coco["categories"]] == ["crosswalk", "stop"]  # VOC: sorted names, ids 1..N
    assert [c["id"] for c in coco["categories"]] == [1, 2]
    assert [(im["file_name"], im["width"], im["height"], im["stamp_ns"]) for im in coco["images"]] == [
        ("frame0.png", 400, 300, 1000_000_000_000), ("frame1.png", 400, 300, 1000_050_000_000)]
    by_image = {a["image_id"]: a for a in coco["annotations"]}
    for image_id, (x0, y0, x1, y1), category in ((1, boxes[0], 2), (2, boxes[1], 1)):
        assert by_image[image_id]["bbox"] == pytest.approx([2 * x0, 2 * y0, 2 * (x1 - x0), 2 * (y1 - y0)])
        assert by_image[image_id]["category_id"] == category


def test_make_from_a_coco_file_and_its_images_folder(tmp_path, road_images, capsys):
    _voc_set(tmp_path / "voc", road_images, (200, 150))
    from anytime_perception.data import read_detection

    json_path = write_coco(read_detection(tmp_path / "voc"), tmp_path / "coco" / "instances.json")
    out = tmp_path / "frames.mcap"
    code = bag_main(["make", "--images", str(json_path.parent / "images"), "--annotations", str(json_path),
                     "--split", "all", "--limit", "1", "--size", "100x75", "--start", "5", "--out", str(out)])
    assert code == 0, capsys.readouterr()
    coco = json.loads(annotations_path(out).read_text())
    assert len(coco["images"]) == 1 and coco["images"][0]["stamp_ns"] == 5_000_000_000
    assert coco["annotations"][0]["bbox"] == pytest.approx([5.0, 10.0, 25.0, 30.0])  # halved
    assert bag_info(out).message_count == 1


def test_make_val_split_is_the_package_validation_split(tmp_path, road_signs_root, capsys):
    out = tmp_path / "val.mcap"
    assert bag_main(["make", "--images", str(road_signs_root), "--split", "val", "--size", "32x24",
                     "--rate", "100", "--out", str(out)]) == 0, capsys.readouterr()
    val = load_split(road_signs_root, "val")
    coco = json.loads(annotations_path(out).read_text())
    assert [im["file_name"] for im in coco["images"]] == [s.image_path.name for s in val]
    assert len(coco["annotations"]) == val.num_boxes
    stamps = [im["stamp_ns"] for im in coco["images"]]
    assert [i.stamp_ns for i in read_image_bag(out)] == stamps
    assert all(b - a == 10_000_000 for a, b in zip(stamps, stamps[1:]))
    assert "/camera/image_raw" in capsys.readouterr().out


def test_make_from_a_plain_image_folder(tmp_path, road_images, capsys):
    folder = tmp_path / "plain"
    folder.mkdir()
    for p in road_images[:3]:
        shutil.copy(p, folder / p.name)
    (folder / "notes.txt").write_text("not an image")
    assert bag_main(["make", "--images", str(folder), "--size", "native", "--out", str(tmp_path / "p.mcap")]) == 0
    assert not annotations_path(tmp_path / "p.mcap").exists()
    shapes = [decode_rgb(i).shape for i in read_image_bag(tmp_path / "p.mcap")]
    assert shapes == [read_rgb(folder / p.name).shape for p in sorted(road_images[:3])]
    assert "3 frames" in capsys.readouterr().out


def _error(capsys, argv: list[str]) -> str:
    assert bag_main(argv) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


def test_bad_inputs_give_clear_errors(tmp_path, small_bag, capsys):
    bag, _ = small_bag
    err = _error(capsys, ["make", "--images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.mcap")])
    assert f"{tmp_path / 'nowhere'}: no such image folder or dataset" in err
    (tmp_path / "empty").mkdir()
    err = _error(capsys, ["make", "--images", str(tmp_path / "empty"), "--out", str(tmp_path / "x.mcap")])
    assert f"{tmp_path / 'empty'}: no images" in err
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    err = _error(capsys, ["make", "--images", str(tmp_path / "empty"), "--annotations", str(bad_json),
                          "--out", str(tmp_path / "x.mcap")])
    assert f"{bad_json}: not valid JSON" in err
    err = _error(capsys, ["make", "--images", str(tmp_path / "empty"), "--out", str(bag)])
    assert "exists already" in err and not (tmp_path / "x").exists()
    # not a bag, a corrupt bag folder, a truncated .mcap file, a bag without images
    assert "metadata.yaml is missing" in _error(capsys, ["info", str(tmp_path / "empty")])
    corrupt = tmp_path / "corrupt"
    shutil.copytree(resolve_bag(bag), corrupt)
    (corrupt / "metadata.yaml").write_text("rosbag2_bagfile_information: [1, 2")
    err = _error(capsys, ["info", str(corrupt)])
    assert f"{corrupt}: cannot read the bag" in err
    truncated = tmp_path / "truncated.mcap"
    truncated.write_bytes((resolve_bag(bag) / "small.mcap").read_bytes()[:5000])
    assert f"{truncated}: cannot read the bag" in _error(capsys, ["info", str(truncated)])
    store = typestore()
    strings = tmp_path / "strings"
    _write_bag(strings, "/chatter", "std_msgs/msg/String", [store.types["std_msgs/msg/String"](data="hi")])
    with pytest.raises(BagError, match=r"no image topic .* its topics: /chatter \(std_msgs/msg/String\)"):
        next(read_image_bag(strings))
    with pytest.raises(BagError, match="no topic /front/camera"):
        next(read_image_bag(bag, "/front/camera"))
    assert f"{tmp_path / 'missing.mcap'}: no such bag" in _error(capsys, ["info", str(tmp_path / "missing.mcap")])


def test_an_encoding_the_node_cannot_use_is_named(tmp_path, capsys):
    store = typestore()
    Image_, Header, Time = (store.types[t] for t in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                     "builtin_interfaces/msg/Time"))
    depth = Image_(header=Header(stamp=Time(sec=7, nanosec=0), frame_id="depth"), height=2, width=2, encoding="32FC1",
                   is_bigendian=0, step=8, data=np.zeros(16, np.uint8))
    _write_bag(tmp_path / "depth", "/depth/image", "sensor_msgs/msg/Image", [depth])
    with pytest.raises(BagError, match=r"/depth/image at stamp 7.000000000 s: unsupported encoding '32FC1'"):
        decode_rgb(next(read_image_bag(tmp_path / "depth")))
    done = subprocess.run(["anytime_replay", "--bag", str(tmp_path / "depth")], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "ROS_DOMAIN_ID": str(DOMAIN + 1)})
    assert done.returncode == 1 and "unsupported encoding '32FC1'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout


class ImageListener:
    """A real subscriber on its own context: the header stamps (ns) of the images it receives."""

    def __init__(self, domain: int, topic: str) -> None:
        os.environ["ROS_DOMAIN_ID"] = str(domain)
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node("bag_test_listener", context=self.context)
        self.stamps: list[int] = []
        self.node.create_subscription(Image, topic, self.image_callback, qos_profile_sensor_data)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def image_callback(self, msg: Image) -> None:
        self.stamps.append(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)

    def wait_for(self, stamps: list[int], timeout: float = 30.0) -> bool:
        end = time.monotonic() + timeout
        while not set(stamps) <= set(self.stamps) and time.monotonic() < end:
            time.sleep(0.05)
        return set(stamps) <= set(self.stamps)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def test_replay_cli_plays_a_bag_with_its_stamps_over_dds(small_bag):
    bag, stamps = small_bag
    listener = ImageListener(DOMAIN, "/front/camera/image_raw")
    replay = subprocess.Popen(["anytime_replay", "--bag", str(bag), "--rate", "20", "--loop", "--wait-subscriber", "30",
                               "--topic-remap", "/camera/image_raw:=/front/camera/image_raw"],
                              env={**os.environ, "ROS_DOMAIN_ID": str(DOMAIN)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        received = listener.wait_for(stamps)
    finally:
        output = stop(replay)
        listener.close()
    assert received, f"received {listener.stamps}; replay said: {output}"
    assert set(listener.stamps) <= set(stamps)
    assert replay.returncode == 0 and "Traceback" not in output, output


def test_play_bag_publishes_at_a_fixed_rate_and_reports_each_frame(small_bag):
    bag, stamps = small_bag
    listener = ImageListener(DOMAIN, "/camera/image_raw")
    context = Context()
    rclpy.init(context=context)
    node = Node("bag_test_player", context=context)
    published: list[tuple[int, float]] = []
    try:
        count = play_bag(node, bag, rate_hz=50, loop=True, limit=7, wait_for_subscriber_s=30,
                         on_publish=lambda stamp, at: published.append((stamp, at)))
        assert count == 7
        assert [s for s, _ in published] == stamps + stamps[:2]  # a loop repeats the recorded stamps
        assert all(a <= b for (_, a), (_, b) in zip(published, published[1:]))
        assert listener.wait_for(stamps[2:], timeout=5) or listener.stamps, "no frame arrived"
        assert set(listener.stamps) <= set(stamps)
        # at the bag's log times, played 10x as fast, into a given publisher
        publisher = node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        published.clear()
        assert play_bag(publisher, bag, rate_scale=10.0, on_publish=lambda s, at: published.append((s, at))) == 5
        assert [s for s, _ in published] == stamps
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
        listener.close()


def test_record_writes_a_real_nodes_results_into_a_bag(tmp_path, road_images):
    frames = [cv2.resize(read_rgb(p), (640, 480)) for p in road_images[:4]]
    out = tmp_path / "results.mcap"
    with node_and_probe(DOMAIN + 2, frames[0], "-p", "vehicle_mode:=performance",
                        "-p", "preempt_on_new_frame:=false") as probe:
        recorder = subprocess.Popen(["anytime_bag", "record", "--topics", "/perception/refined",
                                     "perception/preliminary", "--out", str(out)],
                                    env={**os.environ, "ROS_DOMAIN_ID": str(DOMAIN + 2)}, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
        try:
            subscribed = probe.wait_until(lambda: min(probe.node.count_subscribers(f"/perception/{t}")
                                                      for t in ("refined", "preliminary")) >= 2, 30.0)
            assert subscribed, "the recorder never subscribed"
            time.sleep(1.0)  # the node's writers match the recorder's readers too
            sent = probe.send_in_turn(frames[1:], 100)
            time.sleep(0.5)
        finally:
            output = stop(recorder)
    assert recorder.returncode == 0 and "Traceback" not in output, output
    assert "recording /perception/refined (anytime_perception/msg/DetectionArray)" in output, output
    with AnyReader([resolve_bag(out)]) as reader:  # types from the bag's own definitions
        assert {t: i.msgtype for t, i in reader.topics.items()} == {
            "/perception/refined": "anytime_perception/msg/DetectionArray",
            "/perception/preliminary": "anytime_perception/msg/DetectionArray"}
        messages = [(c.topic, reader.deserialize(raw, c.msgtype)) for c, _, raw in reader.messages()]
    finals = {m.header.stamp.sec for topic, m in messages if topic == "/perception/refined" and m.is_final}
    preliminary = {m.header.stamp.sec for topic, m in messages if topic == "/perception/preliminary"}
    assert set(sent) <= finals and set(sent) <= preliminary
    final = next(m for t, m in messages if t == "/perception/refined" and m.is_final and m.header.stamp.sec == sent[0])
    assert final.mode == "performance" and final.stop_reason and final.num_stages >= 3
    assert bag_info(out).topics["/perception/refined"][1] >= len(sent)
