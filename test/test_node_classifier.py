"""The shipped early-exit classifier in the real node over real DDS: one whole-image detection per
result, and the calibrated gate of the current mode stops frames early (``confident``)."""
from __future__ import annotations

import os

import pytest
import yaml

from anytime_perception.data.image_folder import load_image_folder
from anytime_perception.runtime import load_manifest

from conftest import CIFAR10, REPO
from ros_probe import node_and_probe

DOMAIN = 20 + (os.getpid() + 35) % 70
MODEL = REPO / "models" / "cifar10_resnet20_pteenet"


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """The node in the package's ``normal`` mode, its exit target and calibrated thresholds, but
    with no load ceiling and a long deadline: this test is about the gate, on a busy test machine."""
    modes = yaml.safe_load((REPO / "config" / "modes.yaml").read_text())
    modes["modes"]["normal"].update(cpu_load_ceiling=1.0, deadline_ms=2000.0)
    modes_file = tmp_path_factory.mktemp("classifier") / "modes.yaml"
    modes_file.write_text(yaml.safe_dump(modes))
    test = load_image_folder(CIFAR10, "test")
    with node_and_probe(DOMAIN, test.images[0], "-p", f"model:={MODEL}", "-p", "vehicle_mode:=normal",
                        "-p", f"modes_file:={modes_file}", "-p", "preempt_on_new_frame:=false",
                        "-p", "score_threshold:=0.01") as peer:
        yield peer, test


def test_classifier_results_and_gate_stops(probe):
    peer, test = probe
    manifest = load_manifest(MODEL)
    stamps = peer.send_in_turn(list(test.images[:30]), 5000)
    finals = [peer.finals()[s] for s in stamps]
    for final in finals:
        (d,) = final.detections  # the top class as one detection over the whole 32x32 image
        assert d.label == manifest.labels[d.class_id]
        assert (d.center_x, d.center_y, d.width, d.height) == pytest.approx((16, 16, 32, 32))
    reasons = [f.stop_reason for f in finals]
    assert "confident" in reasons, reasons  # easy images leave at an early exit
    assert set(reasons) <= {"confident", "complete"}
    correct = sum(f.detections[0].class_id == label for f, label in zip(finals, test.labels[:30]))
    assert correct >= 18, f"{correct}/30 correct"  # the shipped ResNet-20 with exits: ~86 % in this mode
