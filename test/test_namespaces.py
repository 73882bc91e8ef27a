"""Several cameras: two real nodes in their own namespaces (one renamed) over real DDS take the
/** parameters file, answer only their own camera, switch modes independently and publish
diagnostics under their own fully qualified names."""
from __future__ import annotations

import os
from contextlib import ExitStack

import cv2
import pytest
import yaml

from anytime_perception.data import load_split, read_rgb

from conftest import REPO
from ros_probe import node_and_probe

DOMAIN = 20 + (os.getpid() + 53) % 70
FRONT, REAR = "/cam_front/anytime_perception", "/cam_rear/rear_detector"


@pytest.fixture(scope="module")
def frame(road_signs_root):
    return cv2.resize(read_rgb(load_split(road_signs_root, "val")[0].image_path), (640, 480))


def test_shipped_params_file_applies_to_any_node_name_and_namespace():
    assert list(yaml.safe_load((REPO / "config" / "params.yaml").read_text())) == ["/**"]


def test_two_cameras_in_their_namespaces_do_not_cross_talk(frame, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "vehicle_mode": "power_saving", "score_threshold": 0.25, "diagnostics_period_s": 0.2}}}))
    common = ("--params-file", str(params), "-p", "preempt_on_new_frame:=false")
    with ExitStack() as stack:
        front = stack.enter_context(node_and_probe(DOMAIN, frame, "-r", "__ns:=/cam_front", *common, node_fqn=FRONT))
        rear = stack.enter_context(node_and_probe(DOMAIN, frame, "-r", "__ns:=/cam_rear", "-r", "__node:=rear_detector",
                                                  *common, node_fqn=REAR))
        for probe in (front, rear):  # the /** file reached both, whatever their names
            assert probe.get_parameter("score_threshold") == pytest.approx(0.25)
            assert probe.get_parameter("vehicle_mode") == "power_saving"

        rear_before = len(rear.messages("refined"))
        front.send_in_turn([frame] * 3, 100)
        assert len(rear.messages("refined")) == rear_before, "the rear node answered the front camera"
        front_before = len(front.messages("refined"))
        rear.send_in_turn([frame] * 3, 200)
        assert len(front.messages("refined")) == front_before, "the front node answered the rear camera"

        ok, reason = front.set_parameter("vehicle_mode", "performance")
        assert ok, reason
        front.send_in_turn([frame], 300)
        rear.send_in_turn([frame], 400)
        assert front.finals()[300].mode == "performance" and rear.finals()[400].mode == "power_saving"

        # each node's status carries its own name: the front's says performance, the rear's power_saving
        assert front.wait_until(lambda: front.diagnostics().get("mode") == "performance"
                                and rear.diagnostics().get("mode") == "power_saving", 10.0), \
            (front.diagnostics(), rear.diagnostics())
