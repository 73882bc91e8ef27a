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
from anytime_perception.calibration.rules import (apply_thresholds, sequential_thresholds, single_threshold,
                                                  soft_oracle, thresholds_for_macs)
from anytime_perception.data.image_folder import load_image_folder
from anytime_perception.export.__main__ import main as export_main
from anytime_perception.export.macs import count_macs
from anytime_perception.nets.early_exit import (DecisionGate, EarlyExitNet, cost_fractions, exit_points,
                                                main_block_points, placement_points, unit_macs)
from anytime_perception.nets.resnet_cifar import resnet_cifar
from anytime_perception.runtime.engine import AnytimeEngine
from anytime_perception.runtime.exit_rules import rule_scores
from anytime_perception.runtime.manifest import ManifestError, load_manifest
from anytime_perception.runtime.model import AnytimeModel
from anytime_perception.runtime.modes import ModeError, load_modes, parse_modes
from anytime_perception.runtime.preprocess import Preprocessor
from anytime_perception.training import classifier_run, exits_run
from anytime_perception.training.early_exits import branch_warmup_loss, cumulative_loss, gate_loss, hinge_loss
from conftest import CIFAR10

MODES = {"default_mode": "strict", "modes": {
    "strict": {"mac_budget": 1.0, "deadline_ms": 10000.0, "cpu_load_ceiling": 1.0, "exit": {"max_accuracy_drop": 0.0}},
    "loose": {"mac_budget": 1.0, "deadline_ms": 10000.0, "cpu_load_ceiling": 1.0, "exit": {"max_mean_macs": 0.6}},
}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A ResNet-8 backbone, PTEEnet branches and hinge d-gates trained on a CIFAR-10 subset, exported:
    ``pteenet`` with our warm-up and cost recursion, ``gates`` with the paper's defaults (main
    blocks, raw score, lambda ||w||), ``gates_ours`` with our options (linear placement,
    normalised score, weight decay)."""
    assert CIFAR10.is_file(), f"real data expected at {CIFAR10}"
    root = tmp_path_factory.mktemp("exits")
    small = ["--data", str(CIFAR10), "--train-limit", "2048", "--test-limit", "400", "--batch-size", "64",
             "--threads", "2"]
    assert classifier_run.main([*small, "--depth", "8", "--epochs", "3", "--out", str(root / "backbone")]) == 0
    common = [*small, "--backbone", str(root / "backbone/last.pt"), "--exits", "2", "--epochs", "2"]
    assert exits_run.main(["pteenet", *common, "--placement", "linear", "--warmup-epochs", "1",
                           "--cost-form", "recursive", "--out", str(root / "pteenet")]) == 0
    assert exits_run.main(["gates", *common, "--loss", "hinge", "--out", str(root / "gates")]) == 0
    assert exits_run.main(["gates", *common, "--epochs", "1", "--placement", "linear", "--gate-score", "normalised",
                           "--gate-penalty", "weight_decay", "--out", str(root / "gates_ours")]) == 0
    for name in ("pteenet", "gates", "gates_ours"):
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
    outputs = [(y0, h0), (y1, h1), (final, torch.ones(4))]
    for form, C0 in (("recursive", h0 * 0.2 + (1 - h0) * C1),  # EEnet: C_0 = h_0 c_0 + (1 - h_0) C_1
                     ("next", h0 * 0.2 + (1 - h0) * 0.5)):  # PTEEnet eq. 3 as printed: ... + (1 - h_0) c_1
        expected = sum(F.nll_loss(Y.log(), targets) + lam * C.mean() for Y, C in ((Y0, C0), (Y1, C1)))
        assert cumulative_loss(outputs, costs, lam, form).item() == pytest.approx(expected.item(), rel=1e-5), form
    default = cumulative_loss(outputs, costs, lam).item()
    assert default == pytest.approx(cumulative_loss(outputs, costs, lam, "next").item())
    assert cumulative_loss(outputs, costs, lam).item() != pytest.approx(
        cumulative_loss(outputs, costs, lam, "recursive").item())
    with pytest.raises(ValueError, match="cost_form"):
        cumulative_loss(outputs, costs, lam, "geometric")


def test_warmup_loss_is_the_cumulative_loss_with_every_exit_confident():
    torch.manual_seed(1)
    outputs = [(torch.randn(5, 4), torch.ones(5)) for _ in range(3)]
    costs = torch.tensor([0.2, 0.5, 1.0])
    warmup = branch_warmup_loss(outputs, torch.zeros(5, dtype=torch.long), costs)
    assert warmup.item() == pytest.approx(cumulative_loss(outputs, costs, lam=0.0).item(), rel=1e-5)
    targets = outputs[-1][0].argmax(1)
    assert warmup.item() == pytest.approx(sum(F.cross_entropy(y, targets).item() for y, _ in outputs[:-1]), rel=1e-6)


def test_hinge_loss_and_gate_norm_penalty():
    scores, labels = torch.tensor([[2.0, -0.5, 0.3]]), torch.tensor([0])
    # class 0 (+1): max(0, 1 - 2) = 0; class 1 (-1): max(0, 1 - 0.5) = 0.5; class 2 (-1): 1.3
    assert hinge_loss(scores, labels).item() == pytest.approx(1.8)
    w0, w1 = torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    outputs = [(scores, None), (scores, None), (scores, None)]  # two gates and the backbone's exit
    data = gate_loss(hinge_loss)(outputs, labels, None)
    assert data.item() == pytest.approx(2 * 1.8)  # the last exit is not a gate
    # the paper's + lambda ||w|| per gate (Frobenius norms 5 and 1)
    assert gate_loss(hinge_loss, [w0, w1], 0.1)(outputs, labels, None).item() == pytest.approx(2 * 1.8 + 0.1 * 6)


def test_gate_score_is_raw_by_default_normalised_as_an_option():
    torch.manual_seed(2)
    features = torch.randn(2, 4, 5, 5)
    raw = DecisionGate(4, 3)
    scores, score = raw(features)
    pooled = features.mean((2, 3))
    f = pooled @ raw.linear.weight.T + raw.linear.bias  # w^T x + b per class
    assert raw.score == "raw" and torch.allclose(score, f.max(1).values, atol=1e-6)  # Algorithm 1
    normalised = DecisionGate(4, 3, score="normalised")
    normalised.load_state_dict(raw.state_dict() | {"normalise": torch.tensor(1.0)})
    _, distance = normalised(features)
    assert torch.allclose(distance, (f / raw.linear.weight.norm(dim=1)).max(1).values, atol=1e-6)
    assert not torch.allclose(distance, score)
    # the formula travels in the state dict; one saved before the option (no buffer) normalised
    reloaded = DecisionGate(4, 3)
    reloaded.load_state_dict(normalised.state_dict())
    assert reloaded.score == "normalised"
    old = {k: v for k, v in raw.state_dict().items() if k != "normalise"}
    legacy = DecisionGate(4, 3)
    legacy.load_state_dict(old)
    assert legacy.score == "normalised" and torch.allclose(legacy(features)[1], distance, atol=1e-6)
    with pytest.raises(ValueError, match="gate score"):
        DecisionGate(4, 3, score="cosine")


def test_gates_go_after_the_main_blocks_by_default():
    assert main_block_points(resnet_cifar(20)) == [3, 6]  # stem = unit 0, 3 blocks per stage
    assert main_block_points(resnet_cifar(32)) == [5, 10]
    assert placement_points(resnet_cifar(20), "main_blocks") == [3, 6]
    assert placement_points(resnet_cifar(20), "linear", 3) == [3, 5, 7]  # our published gates' points
    with pytest.raises(ValueError, match="main_blocks gives 2 exits"):
        placement_points(resnet_cifar(20), "main_blocks", 3)
    net = EarlyExitNet(resnet_cifar(20), [3, 6], "gate")
    assert all(head.score == "raw" for head in net.heads)
    args = {m: exits_run._parse([m, "--backbone", "b", "--data", "d", "--out", "o"]) for m in ("gates", "pteenet")}
    gates = args["gates"]
    assert (gates.placement, gates.gate_score, gates.gate_penalty) == ("main_blocks", "raw", "norm")
    assert args["gates"].weight_decay == 0.0 and args["gates"].gate_lambda > 0  # the norm term replaces weight decay
    assert (args["pteenet"].placement, args["pteenet"].cost_form, args["pteenet"].warmup_epochs) == ("fine", "next", 0)
    ours = exits_run._parse(["gates", "--backbone", "b", "--data", "d", "--out", "o", "--gate-penalty", "weight_decay"])
    assert ours.weight_decay == 5e-4
    assert exits_run.run_options(ours)["gate_lambda"] == 0.0


def test_single_threshold_is_one_t_for_every_exit():
    rng = np.random.default_rng(0)
    n = 400
    correct = np.stack([rng.random(n) < 0.5, rng.random(n) < 0.7, np.ones(n, bool)])
    # exit 0's score ranges over [0, 1], exit 1's over [0, 0.5]: a shared T treats them unequally
    scores = np.stack([correct[0] * 0.5 + rng.random(n) * 0.5, correct[1] * 0.25 + rng.random(n) * 0.25, np.zeros(n)])
    cumulative = np.array([0.3, 0.6, 1.0])
    for target in (1.0, 0.9, 0.8):
        t = single_threshold(scores, correct, cumulative, target)
        assert t.shape == (2,) and t[0] == t[1]
        result = apply_thresholds(scores, t, correct, cumulative)
        assert result.accuracy >= target - 1e-12
        for other in np.unique(scores[:-1]):  # no shared T is cheaper at the target
            alt = apply_thresholds(scores, np.full(2, other), correct, cumulative)
            assert alt.accuracy < target - 1e-12 or alt.mean_macs >= result.mean_macs - 1e-12
    per_exit = sequential_thresholds(scores, correct, cumulative, 0.9)
    assert per_exit[0] != per_exit[1]
    budget = thresholds_for_macs(scores, correct, cumulative, 0.7, mode="single")
    assert budget[0] == budget[1] and apply_thresholds(scores, budget, correct, cumulative).mean_macs <= 0.7


def test_heads_train_on_a_frozen_backbone(trained):
    backbone = torch.load(trained / "backbone/last.pt", weights_only=True)["model"]
    net, meta = exits_run.load_exit_net(trained / "pteenet/last.pt")
    for name, value in backbone.items():  # weights and BatchNorm statistics untouched
        assert torch.equal(net.backbone.state_dict()[name], value), name
    result = json.loads((trained / "pteenet/result.json").read_text())
    assert result["points"] == meta["points"] and len(result["exit_accuracy"]) == 3
    assert all(a > 0.15 for a in result["exit_accuracy"]), result  # 10 classes: well above chance
    assert result["options"]["warmup_epochs"] == 1 and result["options"]["cost_form"] == "recursive"
    gates = json.loads((trained / "gates/result.json").read_text())
    assert gates["points"] == [1, 2]  # ResNet-8: after stages 1 and 2 (one block each)
    assert {k: gates["options"][k] for k in ("placement", "gate_score", "gate_penalty", "weight_decay")} == {
        "placement": "main_blocks", "gate_score": "raw", "gate_penalty": "norm", "weight_decay": 0.0}


def test_export_runs_each_exit_once_and_matches_torch(trained):
    for name in ("pteenet", "gates", "gates_ours"):
        manifest = load_manifest(trained / f"{name}_model")
        _, meta = exits_run.load_exit_net(trained / name / "last.pt")
        assert [s.macs for s in manifest.stages] == meta["stage_macs"]  # graph-counted == hook-counted
        assert [count_macs(s.file) for s in manifest.stages] == meta["stage_macs"]
        head = "confidence" if name == "pteenet" else "distance"
        assert all(set(s.confidence_outputs) == {head} for s in manifest.stages[:-1])
        assert manifest.stages[1].inputs == ("features.0",)  # stage 1 reads the carry, not the image


def test_exported_gates_compute_the_score_they_were_trained_with(trained):
    image = load_image_folder(CIFAR10, "test").images[:1]
    for name, expected in (("gates", "raw"), ("gates_ours", "normalised")):
        net, _ = exits_run.load_exit_net(trained / name / "last.pt")
        assert [head.score for head in net.heads] == [expected] * len(net.heads)
        model = AnytimeModel(trained / f"{name}_model")
        x, _ = Preprocessor(model.manifest.input)(image[0])
        _, heads, confidences = model.run_stage_outputs(0, x, {})
        score = confidences["distance"]
        f = heads["logits"].ravel().astype(np.float64)
        norms = net.heads[0].linear.weight.detach().norm(dim=1).numpy()
        want = f.max() if expected == "raw" else (f / norms).max()
        assert score == pytest.approx(want, rel=1e-4, abs=1e-5), name


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
    # PTEEnet's confidence head: one threshold T for every exit (the paper's); other rules one per exit
    assert all(r["thresholds"] == ("single" if r["rule"] == "confidence" else "per_exit") for r in summary.values())
    for mode, thresholds in manifest.gates["confidence"].items():
        assert len(set(thresholds[:-1])) == 1 and thresholds[-1] == float("inf"), (mode, thresholds)
    rule = manifest.gate_rule  # by default the cheapest at the accuracy-drop targets ("strict" here)
    cheapest = min(summary[r, "strict"]["mean_macs_fraction"] for r in rules)
    assert summary[rule, "strict"]["mean_macs_fraction"] == cheapest
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
