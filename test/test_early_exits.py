"""Early exits: placement, PTEEnet and d-gate training on a real (small) CIFAR-10 backbone, export,
calibration per vehicle mode, and the runtime exiting on the calibrated thresholds."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from torch.nn import functional as F

from anytime_perception.calibration.__main__ import main as calibrate_main
from anytime_perception.calibration.calibrate import ExitRecords, collect, policy_features, rule_matrix
from anytime_perception.calibration.policy import apply_policy, learn_policy
from anytime_perception.calibration.rules import apply_thresholds, sequential_thresholds, soft_oracle
from anytime_perception.data.image_folder import load_image_folder
from anytime_perception.export.__main__ import main as export_main
from anytime_perception.export.macs import count_macs
from anytime_perception.nets.early_exit import DecisionGate, cost_fractions, exit_points, unit_macs
from anytime_perception.nets.resnet_cifar import resnet_cifar
from anytime_perception.runtime.engine import AnytimeEngine
from anytime_perception.runtime.exit_rules import rule_scores
from anytime_perception.runtime.manifest import ManifestError, load_manifest
from anytime_perception.runtime.model import AnytimeModel
from anytime_perception.runtime.modes import ModeError, load_modes, parse_modes
from anytime_perception.runtime.preprocess import Preprocessor
from anytime_perception.training import classifier_run, exits_run
from anytime_perception.training.early_exits import branch_warmup_loss, cumulative_loss, hinge_loss
from conftest import CIFAR10

MODES = {"default_mode": "strict", "modes": {
    "strict": {"mac_budget": 1.0, "deadline_ms": 10000.0, "cpu_load_ceiling": 1.0, "exit": {"max_accuracy_drop": 0.0}},
    "loose": {"mac_budget": 1.0, "deadline_ms": 10000.0, "cpu_load_ceiling": 1.0, "exit": {"max_mean_macs": 0.6}},
}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A ResNet-8 backbone, PTEEnet branches and hinge d-gates trained on a CIFAR-10 subset, exported."""
    assert CIFAR10.is_file(), f"real data expected at {CIFAR10}"
    root = tmp_path_factory.mktemp("exits")
    small = ["--data", str(CIFAR10), "--train-limit", "2048", "--test-limit", "400", "--batch-size", "64", "--threads", "2"]
    assert classifier_run.main([*small, "--depth", "8", "--epochs", "3", "--out", str(root / "backbone")]) == 0
    common = [*small, "--backbone", str(root / "backbone/last.pt"), "--exits", "2", "--epochs", "2"]
    assert exits_run.main(["pteenet", *common, "--placement", "linear", "--out", str(root / "pteenet")]) == 0
    assert exits_run.main(["gates", *common, "--placement", "linear", "--loss", "hinge", "--out", str(root / "gates")]) == 0
    for name in ("pteenet", "gates"):
        export_main(["--checkpoint", str(root / name / "last.pt"), "--out", str(root / f"{name}_model")])
    (root / "modes.yaml").write_text(yaml.safe_dump(MODES))
    return root


def test_placements_follow_their_cost_distributions():
    assert cost_fractions("pareto", 3) == pytest.approx([0.2, 0.36, 0.488])
    assert cost_fractions("fine", 2) == pytest.approx([0.05, 0.0975])
    assert cost_fractions("linear", 3) == pytest.approx([0.25, 0.5, 0.75])
    assert cost_fractions("golden", 2) == pytest.approx([0.618034 ** 2, 0.618034], rel=1e-5)
    units = unit_macs(resnet_cifar(20))
    cumulative = np.cumsum(units) / sum(units)
    for method in ("pareto", "fine", "golden", "linear"):
        points = exit_points(units, 3, method)
        assert len(points) == 3 and points == sorted(set(points)) and points[-1] < len(units) - 1
        for point, fraction in zip(points, cost_fractions(method, 3)):  # first unit reaching it, or pushed later
            assert cumulative[point] >= fraction - 1e-9 or point == points[-1]
    with pytest.raises(ValueError, match="unknown placement"):
        cost_fractions("random", 2)


def test_cumulative_loss_is_the_recursive_pteenet_loss():
    torch.manual_seed(0)
    y0, y1, final = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3)
    h0, h1 = torch.rand(4), torch.rand(4)
    costs, lam = torch.tensor([0.2, 0.5, 1.0]), 0.7
    targets = final.argmax(1)  # the backbone's own predictions, not labels
    p = [F.softmax(t, 1) for t in (y0, y1, final)]
    Y1 = h1[:, None] * p[1] + (1 - h1[:, None]) * p[2]
    C1 = h1 * 0.5 + (1 - h1) * 1.0
    Y0 = h0[:, None] * p[0] + (1 - h0[:, None]) * Y1
    C0 = h0 * 0.2 + (1 - h0) * C1
    expected = sum(F.nll_loss(Y.log(), targets) + lam * C.mean() for Y, C in ((Y0, C0), (Y1, C1)))
    got = cumulative_loss([(y0, h0), (y1, h1), (final, torch.ones(4))], costs, lam)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_warmup_loss_is_the_cumulative_loss_with_every_exit_confident():
    torch.manual_seed(1)
    outputs = [(torch.randn(5, 4), torch.ones(5)) for _ in range(3)]
    costs = torch.tensor([0.2, 0.5, 1.0])
    warmup = branch_warmup_loss(outputs, torch.zeros(5, dtype=torch.long), costs)
    assert warmup.item() == pytest.approx(cumulative_loss(outputs, costs, lam=0.0).item(), rel=1e-5)
    targets = outputs[-1][0].argmax(1)
    assert warmup.item() == pytest.approx(sum(F.cross_entropy(y, targets).item() for y, _ in outputs[:-1]), rel=1e-6)


def test_hinge_loss_and_gate_distance():
    scores, labels = torch.tensor([[2.0, -0.5, 0.3]]), torch.tensor([0])
    # class 0 (+1): max(0, 1 - 2) = 0; class 1 (-1): max(0, 1 - 0.5) = 0.5; class 2 (-1): 1.3
    assert hinge_loss(scores, labels).item() == pytest.approx(1.8)
    gate = DecisionGate(4, 3)
    features = torch.randn(2, 4, 5, 5)
    scores, distance = gate(features)
    pooled = features.mean((2, 3))
    expected = ((pooled @ gate.linear.weight.T + gate.linear.bias) / gate.linear.weight.norm(dim=1)).max(1).values
    assert torch.allclose(distance, expected, atol=1e-6) and scores.shape == (2, 3)


def test_heads_train_on_a_frozen_backbone(trained):
    backbone = torch.load(trained / "backbone/last.pt", weights_only=True)["model"]
    net, meta = exits_run.load_exit_net(trained / "pteenet/last.pt")
    for name, value in backbone.items():  # weights and BatchNorm statistics untouched
        assert torch.equal(net.backbone.state_dict()[name], value), name
    result = json.loads((trained / "pteenet/result.json").read_text())
    assert result["points"] == meta["points"] and len(result["exit_accuracy"]) == 3
    assert all(a > 0.15 for a in result["exit_accuracy"]), result  # 10 classes: well above chance


def test_export_runs_each_exit_once_and_matches_torch(trained):
    for name in ("pteenet", "gates"):
        manifest = load_manifest(trained / f"{name}_model")
        _, meta = exits_run.load_exit_net(trained / name / "last.pt")
        assert [s.macs for s in manifest.stages] == meta["stage_macs"]  # graph-counted == hook-counted
        assert [count_macs(s.file) for s in manifest.stages] == meta["stage_macs"]
        head = "confidence" if name == "pteenet" else "distance"
        assert all(set(s.confidence_outputs) == {head} for s in manifest.stages[:-1])
        assert manifest.stages[1].inputs == ("features.0",)  # stage 1 reads the carry, not the image


def _records(trained, name, limit=200) -> ExitRecords:
    model = AnytimeModel(trained / f"{name}_model")
    half, _ = load_image_folder(CIFAR10, "test").halves(0)
    half = half.subset(limit, 0)
    return collect(model, half.images, half.labels)


def test_threshold_rules_and_policy_on_real_exits(trained):
    records = _records(trained, "pteenet")
    correct, cumulative = records.correct, records.cumulative_macs
    final = correct[-1].mean()
    macs = []
    for drop in (0.0, 0.05, 0.2):
        scores = rule_matrix("msp", records)
        t = sequential_thresholds(scores, correct, cumulative, final - drop)
        outcome = apply_thresholds(scores, t, correct, cumulative)
        assert outcome.accuracy >= final - drop - 1e-9
        macs.append(outcome.mean_macs)
    assert macs[0] >= macs[1] >= macs[2] and macs[2] < cumulative[-1]
    np.testing.assert_allclose(rule_matrix("msp", records)[:-1], rule_scores("msp", records.logits[:-1]))
    features = policy_features(records)
    never = apply_policy(learn_policy(features, correct, cumulative, lam=0.0), features, correct, cumulative)
    always = apply_policy(learn_policy(features, correct, cumulative, lam=100.0), features, correct, cumulative)
    assert never.accuracy >= final - 1e-9  # cost-free: leave early only where that is no worse
    assert always.exit_share[0] == 1.0 and always.mean_macs == cumulative[0]
    oracle = soft_oracle(correct, cumulative)
    assert oracle.accuracy == correct.any(0).mean() and oracle.mean_macs <= never.mean_macs


def test_calibration_writes_thresholds_the_engine_realises(trained, capsys):
    model_dir = trained / "pteenet_model"
    assert calibrate_main(["--model", str(model_dir), "--data", str(CIFAR10), "--modes", str(trained / "modes.yaml"),
                           "--limit", "200"]) == 0
    manifest = load_manifest(model_dir)
    rules = {"msp", "gap", "entropy", "confidence", "policy"}
    assert set(manifest.gates) == rules and len(manifest.policies) == 2
    assert set(manifest.gates["confidence"]) == {"strict", "loose"}
    summary = {(r["rule"], r["mode"]): r for r in json.loads((model_dir / "calibration.json").read_text())["summary"]}
    rule = manifest.gate_rule  # by default the cheapest at the accuracy-drop targets ("strict" here)
    assert summary[rule, "strict"]["mean_macs_fraction"] == min(summary[r, "strict"]["mean_macs_fraction"] for r in rules)
    assert summary[rule, "loose"]["mean_macs_fraction"] <= 0.6 + 1e-9
    # the deployed engine takes exactly the calibrated decisions on the same images
    half, _ = load_image_folder(CIFAR10, "test").halves(0)
    half = half.subset(200, 0)
    model = AnytimeModel(model_dir)
    modes = load_modes(trained / "modes.yaml", model.manifest.total_macs)
    for mode in ("strict", "loose"):
        engine = AnytimeEngine(model, modes, mode, score_threshold=0.0)
        finals = [engine.process(image)[-1] for image in half.images]
        mean = np.mean([r.macs for r in finals]) / model.manifest.total_macs
        assert mean == pytest.approx(summary[rule, mode]["mean_macs_fraction"], abs=1e-9)
        accuracy = np.mean([r.detections[0].class_id == label for r, label in zip(finals, half.labels)])
        assert accuracy == pytest.approx(summary[rule, mode]["accuracy"], abs=1e-9)
        stops = {r.stop_reason for r in finals}
        assert stops <= {"confident", "complete"}
    assert "confident" in stops  # the loose mode exits early


def test_runtime_rule_choice_and_gate_model(trained):
    assert calibrate_main(["--model", str(trained / "gates_model"), "--data", str(CIFAR10), "--modes",
                           str(trained / "modes.yaml"), "--limit", "100", "--rules", "distance", "msp"]) == 0
    model = AnytimeModel(trained / "gates_model", gate_rule="msp")
    image = load_image_folder(CIFAR10, "test").images[0]
    x, _ = Preprocessor(model.manifest.input)(image)
    _, heads, score = model.run_stage(0, x, {})
    assert score == pytest.approx(float(rule_scores("msp", heads["logits"].ravel())))
    with pytest.raises(ValueError, match="not calibrated"):
        AnytimeModel(trained / "gates_model", gate_rule="entropy")


def test_bad_calibration_inputs_are_refused(trained, tiny_model, capsys):
    assert calibrate_main(["--model", str(tiny_model), "--data", str(CIFAR10)]) == 2  # a detector needs road_signs
    assert "cifar10_jpg.zip" in capsys.readouterr().err
    assert calibrate_main(["--model", str(tiny_model), "--data", str(CIFAR10), "--rules", "msp"]) == 2
    assert "frame gate only" in capsys.readouterr().err
    assert calibrate_main(["--model", str(trained / "pteenet_model"), "--data", str(CIFAR10), "--rules", "magic"]) == 2
    assert "not available" in capsys.readouterr().err
    with pytest.raises(ModeError, match="modes.fast.exit"):
        parse_modes({"modes": {"fast": {"mac_budget": 1.0, "deadline_ms": 5, "cpu_load_ceiling": 1,
                                        "exit": {"max_accuracy": 0.1}}}}, 100)
    data = yaml.safe_load((trained / "pteenet_model/manifest.yaml").read_text())
    data["gate"] = {"rule": "policy", "policy": [{"weights": [1, 2], "bias": 0, "mean": [0, 0], "std": [1, 1]}],
                    "thresholds": {"policy": {"strict": [0.5, 0.5, 0.5]}}}
    (trained / "bad").mkdir(exist_ok=True)
    for f in (trained / "pteenet_model").glob("*.onnx"):
        (trained / "bad" / f.name).write_bytes(f.read_bytes())
    (trained / "bad/manifest.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ManifestError, match="gate.policy"):
        load_manifest(trained / "bad")
