"""The detector's frame gate: learned on the detector's own outputs, calibrated per mode, used by
the engine, and measured on the validation split."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml

from anytime_perception.calibration.__main__ import main as calibrate_main
from anytime_perception.calibration.detector import frames_match
from anytime_perception.data import load_split, read_rgb
from anytime_perception.eval.detector_gate import gated_map
from anytime_perception.runtime.engine import AnytimeEngine
from anytime_perception.runtime.exit_rules import detection_features
from anytime_perception.runtime.model import AnytimeModel
from anytime_perception.runtime.modes import load_modes
from anytime_perception.runtime.types import Detection
from conftest import ROAD_SIGNS, SHIPPED_MODEL

MODES = {"default_mode": "strict", "modes": {
    "strict": {"mac_budget": 1.0, "deadline_ms": 10000.0, "cpu_load_ceiling": 1.0, "exit": {"max_accuracy_drop": 0.0}},
    "loose": {"mac_budget": 1.0, "deadline_ms": 10000.0, "cpu_load_ceiling": 1.0, "exit": {"max_mean_macs": 0.5}},
    "ungated": {"mac_budget": 1.0, "deadline_ms": 10000.0, "cpu_load_ceiling": 1.0},
}}


def _box(c: int, x: float, score: float = 0.9) -> Detection:
    return Detection(c, "l", score, x, 50.0, 20.0, 20.0)


def test_frames_match_pairs_classes_and_boxes():
    assert frames_match([_box(0, 50), _box(1, 100)], [_box(1, 101), _box(0, 49)], 0.3)
    assert not frames_match([_box(0, 50)], [_box(1, 50)], 0.3)  # other class
    assert not frames_match([_box(0, 50)], [_box(0, 70)], 0.3)  # IoU < 0.5
    assert not frames_match([_box(0, 50), _box(0, 52)], [_box(0, 50)], 0.3)  # one left over
    assert frames_match([_box(0, 50), _box(1, 90, 0.1)], [_box(0, 50)], 0.3)  # below the threshold: ignored
    features = detection_features(np.array([0.9, 0.4, 0.2, 0.01]))
    assert features == pytest.approx([0.9, 0.4, 0.2, 2, 2, 0.1 + 0.4 + 0.2])


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    model = root / "model"
    shutil.copytree(SHIPPED_MODEL, model)
    (root / "modes.yaml").write_text(yaml.safe_dump(MODES))
    assert calibrate_main(["--model", str(model), "--data", str(ROAD_SIGNS), "--modes", str(root / "modes.yaml"),
                           "--limit", "120"]) == 0
    return model, root / "modes.yaml"


def test_gate_is_calibrated_per_mode_and_used_by_the_engine(gated):
    model_dir, modes_file = gated
    model = AnytimeModel(model_dir)
    assert model.manifest.gate_rule == "policy" and len(model.manifest.policies) == model.num_stages - 1
    assert set(model.manifest.gates["policy"]) == {"strict", "loose"}
    modes = load_modes(modes_file, model.manifest.total_macs)
    images = [read_rgb(s.image_path) for s in load_split(ROAD_SIGNS, "val")[:30]]
    macs = {}
    for mode in ("strict", "loose", "ungated"):
        engine = AnytimeEngine(model, modes, mode)
        finals = [engine.process(image)[-1] for image in images]
        assert {r.stop_reason for r in finals} <= {"confident", "complete"}
        macs[mode] = np.mean([r.macs for r in finals])
        if mode == "ungated":
            assert {r.stop_reason for r in finals} == {"complete"}
        if mode == "loose":
            assert "confident" in {r.stop_reason for r in finals}
    assert macs["loose"] < macs["strict"] <= macs["ungated"]


def test_gated_map_reports_savings_per_mode(gated):
    model_dir, modes_file = gated
    rows = {r["mode"]: r for r in gated_map(AnytimeModel(model_dir), str(ROAD_SIGNS), str(modes_file))}
    assert rows["ungated"]["macs_fraction"] == rows["ungated"]["macs_fraction_without_gate"] == 1.0
    assert rows["loose"]["macs_fraction"] <= 0.6 and rows["loose"]["macs_fraction"] < rows["strict"]["macs_fraction"]
    assert rows["strict"]["map50"] >= rows["strict"]["map50_without_gate"] - 0.05
    assert all(abs(sum(r["stage_share"]) - 1) < 1e-9 for r in rows.values())
