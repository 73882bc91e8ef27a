"""Network selection over a cascade (Bolukbasi et al., 2017): paths and their costs, the soft
oracle, learned policies and the myopic threshold on three small real CIFAR-10 networks (a little
MobileNet, ResNet-8, ResNet-20), hand-made logits where only the arithmetic is tested, and the
report CLI with checkpoints of every kind it loads."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from anytime_perception.calibration.cascade import (apply_cascade, cascade_records, learn_cascade, myopic, path_outcome,
                                                    paths, rises, soft_oracle)
from anytime_perception.data.image_folder import load_image_folder
from cascade_analysis import NEVER, load_network, logits_of, path_time, records_on, time_networks
from cascade_report import main as report_main
from anytime_perception.training import appeal_run, classifier_run
from anytime_perception.export.__main__ import main as export_main
from anytime_perception.training.classification import normalise
from conftest import CIFAR10

TEST_LIMIT = 600
SMALL = ["--data", str(CIFAR10), "--train-limit", "1024", "--test-limit", "100", "--batch-size", "64",
         "--threads", "1", "--epochs", "2"]


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    """Little (appeal_run MobileNet, our width-0.5 stride-2 option: the paper's full-width one costs
    more than a ResNet-20), middle (ResNet-8) and big (ResNet-20) on a CIFAR-10 subset."""
    assert CIFAR10.is_file(), f"real data expected at {CIFAR10}"
    root = tmp_path_factory.mktemp("cascade")
    assert appeal_run.main(["little", *SMALL, "--arch", "mobilenet_w05_s2", "--out", str(root / "mobilenet")]) == 0
    for depth in (8, 20):
        assert classifier_run.main([*SMALL, "--depth", str(depth), "--out", str(root / f"resnet{depth}")]) == 0
    return [root / name / "last.pt" for name in ("mobilenet", "resnet8", "resnet20")]


@pytest.fixture(scope="module")
def halves(networks):
    """(calibration, evaluation) records of the three networks on halves of a test subset."""
    torch.set_num_threads(1)
    test = load_image_folder(CIFAR10, "test").subset(TEST_LIMIT, 0)
    loaded = [load_network(c, c.parent.name, 32) for c in networks]
    return tuple(records_on(loaded, h) for h in test.halves(0))


def _paths_taken(outcome) -> list[tuple[int, ...]]:
    """The path of every input: the networks it evaluated."""
    return [tuple(np.flatnonzero(column)) for column in outcome.evaluated.T]


def test_paths_and_their_costs():
    assert paths(3) == [(0,), (0, 1), (0, 1, 2), (0, 2)]
    assert paths(2) == [(0,), (0, 1)] and len(paths(4)) == 6  # 0, 01, 012, 0123, 013, 03
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 50)
    records = cascade_records([rng.normal(size=(50, 4)) for _ in range(3)], labels, [1, 3, 10])
    expected = {(0,): 1, (0, 1): 4, (0, 1, 2): 14, (0, 2): 11, (2,): 10}
    for path, macs in expected.items():
        outcome = path_outcome(records, path)
        assert outcome.mean_macs == macs, path
        assert (outcome.answer == path[-1]).all() and outcome.path_share == {">".join(map(str, path)): 1.0}
        assert outcome.accuracy == records.correct[path[-1]].mean()
    with pytest.raises(ValueError, match="rising MACs"):
        cascade_records([rng.normal(size=(5, 4))] * 3, labels[:5], [1, 10, 3])


def test_papers_soft_oracle_exits_early_only_where_all_later_networks_are_right(halves):
    _, evaluation = halves
    oracle = soft_oracle(evaluation)  # the default: Bolukbasi et al.'s
    assert oracle.accuracy == evaluation.correct[-1].mean()  # never fixes the big network's errors
    rows = np.arange(evaluation.correct.shape[1])
    for i, k in zip(rows, oracle.answer):
        assert k == 2 or evaluation.correct[k:, i].all()
    oracle_cost = evaluation.macs @ oracle.evaluated  # [N]
    assert (oracle_cost <= evaluation.macs[[0, 2]].sum()).all()  # never dearer than little -> big
    assert oracle.mean_macs < path_outcome(evaluation, (0, 2)).mean_macs
    assert set(_paths_taken(oracle)) <= set(paths(3))


def test_our_any_correct_oracle_is_never_worse_than_a_fixed_path(halves):
    _, evaluation = halves
    oracle = soft_oracle(evaluation, "any_correct")
    assert oracle.accuracy == evaluation.correct.any(0).mean()
    assert oracle.accuracy >= soft_oracle(evaluation).accuracy
    oracle_cost = evaluation.macs @ oracle.evaluated  # [N]
    for path in paths(3):
        fixed = path_outcome(evaluation, path)
        assert oracle.accuracy >= fixed.accuracy
        right = evaluation.correct[path[-1]]
        assert (oracle_cost[right] <= evaluation.macs[list(path)].sum()).all(), path
    assert set(_paths_taken(oracle)) <= set(paths(3))
    with pytest.raises(ValueError, match="soft-oracle rule"):
        soft_oracle(evaluation, "hard")


def test_the_two_oracles_differ_where_a_cheaper_network_fixes_a_later_ones_error():
    """Four inputs: (little, middle, big) right? (T,T,T) -> both exit at little; (T,F,T) -> the
    paper's goes little -> big (the middle one is wrong), ours exits at little; (T,T,F) -> the
    paper's keeps the big network's error, ours exits at little; (F,F,F) -> both little -> big."""
    labels = np.zeros(4, int)
    right, wrong = np.array([5.0, 0.0]), np.array([0.0, 5.0])
    table = [(1, 1, 1), (1, 0, 1), (1, 1, 0), (0, 0, 0)]
    logits = [np.stack([right if row[k] else wrong for row in table]) for k in range(3)]
    records = cascade_records(logits, labels, [1, 3, 10])
    paper, ours = soft_oracle(records), soft_oracle(records, "any_correct")
    assert _paths_taken(paper) == [(0,), (0, 2), (0, 2), (0, 2)] and paper.accuracy == 0.5
    assert _paths_taken(ours) == [(0,), (0,), (0,), (0,)] and ours.accuracy == 0.75


def test_rising_cascades_rise_in_accuracy_and_cost():
    assert rises([0.6, 0.87, 0.9], [4, 41, 126])
    assert not rises([0.6, 0.87, 0.82], [4, 41, 69])  # our ResNet-20 -> ResNet-32 cascade
    assert not rises([0.6, 0.87], [41, 4])


def test_learned_policy_at_zero_cost_weight_keeps_the_big_networks_accuracy(halves):
    calibration, evaluation = halves
    policy = learn_cascade(calibration, 0.0)
    learned = apply_cascade(policy, calibration)
    assert learned.accuracy >= calibration.correct[-1].mean() - 1e-12  # learned where it trains
    assert apply_cascade(policy, evaluation).accuracy >= evaluation.correct[-1].mean() - 0.05


def test_cost_weight_moves_frames_to_cheaper_networks(halves):
    calibration, evaluation = halves
    outcomes = [apply_cascade(learn_cascade(calibration, lam), evaluation) for lam in (0.0, 0.3, 100.0)]
    for outcome in outcomes:
        assert sum(outcome.answer_share) == pytest.approx(1.0)
        assert sum(outcome.path_share.values()) == pytest.approx(1.0)
        taken = _paths_taken(outcome)
        assert set(taken) <= set(paths(3)) and outcome.answer.tolist() == [path[-1] for path in taken]
    assert outcomes[0].mean_macs > outcomes[1].mean_macs > outcomes[2].mean_macs
    assert outcomes[2].answer_share[0] == 1.0 and outcomes[2].mean_macs == evaluation.macs[0]


def test_myopic_threshold_returns_at_the_first_confident_network(halves):
    _, evaluation = halves
    assert myopic(evaluation, 0.0).answer_share[0] == 1.0
    never = myopic(evaluation, NEVER)
    assert never.answer_share[-1] == 1.0 and never.mean_macs == pytest.approx(evaluation.macs.sum())
    threshold = float(np.median(evaluation.msp[:-1]))
    outcome = myopic(evaluation, threshold)
    for i in range(len(outcome.answer)):
        expected = next((k for k in range(2) if evaluation.msp[k, i] >= threshold), 2)
        assert outcome.answer[i] == expected and outcome.evaluated[:, i].tolist() == [k <= expected for k in range(3)]


def test_learned_policy_goes_next_or_jumps_where_each_is_cheaper():
    """Thirds of easy, medium and hard inputs. Little: right and sure on easy ones, wrong and
    less sure on medium, wrong and unsure on hard ones; middle: right and sure on medium ones,
    wrong and unsure on hard ones; big: always right. The policy returns easy inputs at once,
    sends medium ones to the middle network and hard ones straight to the big one; the myopic
    threshold, with no jump, also pays for the middle network on hard inputs."""
    n, classes = 300, 5
    labels = np.arange(n) % classes
    group = np.arange(n) * 3 // n  # 0 easy, 1 medium, 2 hard
    wrong = (labels + 1) % classes

    def logits(target: np.ndarray, value: np.ndarray) -> np.ndarray:
        return value[:, None] * np.eye(classes)[target]  # [N, C]

    little = logits(np.where(group == 0, labels, wrong), np.array([6.0, 1.5, 0.3])[group])
    middle = logits(np.where(group == 2, wrong, labels), np.array([6.0, 6.0, 0.3])[group])
    big = logits(labels, np.full(n, 6.0))
    records = cascade_records([little, middle, big], labels, [1, 5, 20])
    learned = apply_cascade(learn_cascade(records, 0.2), records)
    assert learned.accuracy == 1.0
    assert learned.path_share == pytest.approx({"0": 1 / 3, "0>1": 1 / 3, "0>2": 1 / 3})
    assert learned.mean_macs == pytest.approx((1 + 6 + 21) / 3)
    threshold = myopic(records, 0.9)
    assert threshold.accuracy == 1.0 and threshold.mean_macs == pytest.approx((1 + 6 + 26) / 3)


def test_report_writes_tables_json_and_plot(networks, tmp_path):
    args = ["--data", str(CIFAR10), "--networks", *map(str, networks), "--test-limit", str(TEST_LIMIT),
            "--threads", "1", "--out", str(tmp_path), "--time-runs", "5"]
    assert report_main(args) == 0
    assert report_main([*args, "--dataset", "again", "--names", "little", "middle", "big", "--oracle", "any_correct",
                        "--time-runs", "0"]) == 0
    report = json.loads((tmp_path / "cascade.json").read_text())
    assert set(report) == {"cifar10", "again"}  # a later dataset is added, the earlier one kept
    entry = report["cifar10"]
    assert [n["kind"] for n in entry["networks"]] == ["little", "resnet_cifar", "resnet_cifar"]
    macs = [n["macs"] for n in entry["networks"]]
    assert macs == sorted(macs) and entry["singles"][-1]["macs_fraction"] == 1.0
    big = entry["singles"][-1]["accuracy"]
    assert entry["oracle"]["rule"] == "paper" and entry["oracle"]["accuracy"] == pytest.approx(big)
    assert "oracle_any_correct" not in entry  # ours only when asked for
    ours = report["again"]["oracle_any_correct"]
    assert ours["rule"] == "any_correct" and ours["accuracy"] >= max(s["accuracy"] for s in entry["singles"])
    assert len(entry["times_ms"]) == 3 and all(t > 0 for t in entry["times_ms"]) and report["again"]["times_ms"] is None
    assert entry["rising"] == rises([n["calibration_accuracy"] for n in entry["networks"]], macs)
    for key in ("learned", "myopic"):  # within 1 % of the big network where chosen
        chosen = entry["operating"][key]
        assert chosen["calibration"]["accuracy"] >= entry["networks"][-1]["calibration_accuracy"] - 0.01 - 1e-12
        assert sum(chosen["evaluation"]["exit_share"]) == pytest.approx(1.0)
        assert abs(chosen["evaluation"]["accuracy"] - big) < 0.1
    zero = entry["curves"]["learned"][0]
    assert zero["setting"] == 0.0 and len(entry["policy"]["stop"]) == 2 and entry["policy"]["jump"][1] is None
    tables = (tmp_path / "cascade_tables.md").read_text()
    assert "## cifar10" in tables and "## again" in tables
    assert "speed-up (MACs)" in tables and "speed-up (time)" in tables
    assert "| always big | - |" in tables and "| 1.00x |" in tables and "| little | `" in tables
    assert "| soft oracle, paper's (exit only where all later networks are right) | - |" in tables
    assert "| soft oracle, ours (`--oracle any_correct`" in tables and "| CPU time |" in tables
    assert "not measured in this session" in tables.split("## again")[1]  # no timing asked for there
    assert "What the paper reports" in tables and "2.8x speedup" in tables
    assert (tmp_path / "cascade_cifar10.png").stat().st_size > 10_000
    # a cascade whose last network is not the most accurate is flagged (entry as stored before the flag)
    entry["networks"][-1]["calibration_accuracy"] = entry["networks"][0]["calibration_accuracy"] - 0.01
    del entry["rising"]
    (tmp_path / "cascade.json").write_text(json.dumps({"flagged": entry}))
    assert report_main(["--render-only", "--out", str(tmp_path)]) == 0
    rendered = (tmp_path / "cascade_tables.md").read_text()
    assert "**Flagged: the networks do not rise in accuracy" in rendered and "## cifar10" not in rendered


def test_report_rejects_bad_networks(networks, tmp_path, capsys):
    torch.save({"meta": {"kind": "mystery"}, "model": {}}, tmp_path / "mystery.pt")
    common = ["--data", str(CIFAR10), "--test-limit", "40", "--threads", "1", "--out", str(tmp_path)]
    assert report_main([*common, "--networks", str(tmp_path / "mystery.pt"), str(networks[2])]) == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "cascade.json").exists()
    assert report_main([*common, "--networks", str(networks[2]), str(networks[0])]) == 2
    assert "rising MACs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        report_main([*common, "--networks", *map(str, networks), "--names", "a", "b"])
    assert exit_info.value.code == 2


def test_an_appealnet_serves_as_the_little_network(networks, tmp_path):
    """A joint AppealNet checkpoint loads as its little network: the same logits, the little's MACs."""
    assert appeal_run.main(["joint", *SMALL, "--epochs", "1", "--train-limit", "256", "--little", str(networks[0]),
                            "--black-box", "--out", str(tmp_path / "appeal")]) == 0
    little = load_network(networks[0], "little", 32)
    appeal = load_network(tmp_path / "appeal/last.pt", "appeal", 32)
    assert appeal.kind == "appeal" and appeal.macs == little.macs
    images = load_image_folder(CIFAR10, "test").subset(64, 1)
    net, meta = appeal_run.appeal_from_state(torch.load(tmp_path / "appeal/last.pt", weights_only=True))
    with torch.no_grad():
        expected = net(normalise(images.images, meta["mean"], meta["std"]))["logits"].numpy()
    np.testing.assert_allclose(logits_of(appeal, images), expected, rtol=1e-4, atol=1e-4)


def test_an_exported_model_directory_serves_as_a_network(networks, tmp_path):
    """An exported model (ONNX full graph) loads as a cascade network: the same logits as its
    checkpoint, the MACs of its manifest, and a measured time."""
    export_main(["--checkpoint", str(networks[1]), "--out", str(tmp_path / "resnet8")])
    onnx = load_network(tmp_path / "resnet8", "resnet8", 32)
    torch_net = load_network(networks[1], "resnet8", 32)
    assert onnx.kind == "onnx" and onnx.macs == torch_net.macs
    images = load_image_folder(CIFAR10, "test").subset(16, 2)
    np.testing.assert_allclose(logits_of(onnx, images), logits_of(torch_net, images), rtol=1e-4, atol=1e-4)
    times = time_networks([onnx, torch_net], images, repeats=4, warmup=1)
    assert len(times) == 2 and all(t > 0 for t in times)
    assert path_time({"0": 0.5, "0>1": 0.5}, [1.0, 3.0]) == pytest.approx(2.5)
