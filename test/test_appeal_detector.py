"""AppealNet for the detector, end to end on real data: the predictor q(x) trained on the shipped
detector's own stage-0 and full-model losses, exported into stage 0's graph, calibrated per mode."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from anytime_perception.calibration.appeal import main as calibrate_appeals
from anytime_perception.export.__main__ import main as export
from anytime_perception.nets.appeal_detector import detector_predictor
from anytime_perception.runtime import AnytimeModel, load_manifest
from anytime_perception.training.appeal import LagrangeMultiplier, joint_loss
from anytime_perception.training.appeal_detector import fit_predictor, load_detector
from anytime_perception.training.appeal_detector import main as train

from conftest import MODES_FILE, ROAD_SIGNS, SHIPPED_MODEL


def test_joint_loss_pushes_q_towards_the_better_network():
    """Where the little loss is lower q rises, where the big loss is lower q falls."""
    torch.manual_seed(0)
    model, _ = load_detector(SHIPPED_MODEL / "weights.pt")
    predictor = detector_predictor(model, 0)
    features = torch.randn(400, predictor.linear.in_features)
    little_better = features[:, 0] > 0  # the first feature tells which network is better
    little = torch.where(little_better, 0.2, 2.0)
    big = torch.full((400,), 1.0)
    fit_predictor(predictor, features, little, big, LagrangeMultiplier(0.01, target=0.5), epochs=30, lr=0.05)
    with torch.no_grad():
        q = predictor.score(features)
    assert q[little_better].mean() > q[~little_better].mean() + 0.3
    loss, predictor_loss = joint_loss(little, q, big, beta=0.0)
    assert float(loss) == pytest.approx(float((q * little + (1 - q) * big).mean()), rel=1e-6)
    assert float(predictor_loss) == pytest.approx(float(-q.clamp(1e-12, 1).log().mean()), rel=1e-5)


def test_predictor_trains_exports_into_stage_zero_and_calibrates(tmp_path):
    run, out = tmp_path / "run", tmp_path / "road_signs_anywidth"
    assert train(["--detector", str(SHIPPED_MODEL / "weights.pt"), "--data", str(ROAD_SIGNS), "--out", str(run),
                  "--limit", "32", "--passes", "1", "--epochs", "10", "--threads", "1"]) == 0
    result = json.loads((run / "result.json").read_text())
    assert 0 < result["val_mean_q"] < 1 and result["final_beta"] > 0
    assert -1 <= result["val_rank_correlation_q_gain"] <= 1
    export(["--checkpoint", str(run / "last.pt"), "--out", str(out)])
    manifest = load_manifest(out)
    assert manifest.stages[0].confidence_outputs == {"appeal": "appeal"} and manifest.appeal is None
    shipped = load_manifest(SHIPPED_MODEL)
    assert [s.macs for s in manifest.stages[1:]] == [s.macs for s in shipped.stages[1:]]  # later stages unchanged
    assert manifest.stages[0].macs >= shipped.stages[0].macs  # + the predictor's one linear layer

    model = AnytimeModel(out)
    x = np.random.default_rng(0).normal(size=(1, 3, 320, 320)).astype(np.float32)
    _, heads, confidences = model.run_stage_outputs(0, x, {})
    _, shipped_heads, _ = AnytimeModel(SHIPPED_MODEL).run_stage_outputs(0, x, {})
    assert 0 < confidences["appeal"] < 1
    np.testing.assert_allclose(heads["heatmap"], shipped_heads["heatmap"], atol=1e-4)  # the little detector as shipped

    assert calibrate_appeals(["--model", str(out), "--big", str(SHIPPED_MODEL), "--data", str(ROAD_SIGNS),
                              "--modes", str(MODES_FILE), "--limit", "24"]) == 0
    appeal = load_manifest(out).appeal
    assert appeal.stage == 0 and appeal.big_model == "road_signs_anywidth" and appeal.confidence == "appeal"
    thresholds = appeal.thresholds
    modes = yaml.safe_load(MODES_FILE.read_text())["modes"]
    # power_saving allows no appeals; the big detector is this model's own full model, so only modes
    # whose budget stops it before the last stage appeal
    assert set(thresholds) == {m for m, spec in modes.items() if spec.get("appeal") and spec["mac_budget"] < 1.0}
    summary = {r["mode"]: r for r in json.loads((out / "appeal_calibration.json").read_text())["summary"]}
    assert summary["minimal"]["appeal_rate"] <= 0.3 + 1e-9
