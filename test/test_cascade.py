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
                                                    paths, soft_oracle)
from anytime_perception.data.image_folder import load_image_folder
from cascade_analysis import NEVER, load_network, logits_of, records_on
from cascade_report import main as report_main
from anytime_perception.training import appeal_run, classifier_run
from anytime_perception.training.classification import normalise
from conftest import CIFAR10

TEST_LIMIT = 600
SMALL = ["--data", str(CIFAR10), "--train-limit", "1024", "--test-limit", "100", "--batch-size", "64",
         "--threads", "1", "--epochs", "2"]


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    """Little (appeal_run MobileNet), middle (ResNet-8) and big (ResNet-20) on a CIFAR-10 subset."""
    assert CIFAR10.is_file(), f"real data expected at {CIFAR10}"
    root = tmp_path_factory.mktemp("cascade")
    assert appeal_run.main(["little", *SMALL, "--arch", "mobilenet", "--out", str(root / "mobilenet")]) == 0
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


def test_soft_oracle_is_never_worse_than_a_fixed_path(halves):
    _, evaluation = halves
    oracle = soft_oracle(evaluation)
    assert oracle.accuracy == evaluation.correct.any(0).mean()
    oracle_cost = evaluation.macs @ oracle.evaluated  # [N]
    for path in paths(3):
        fixed = path_outcome(evaluation, path)
        assert oracle.accuracy >= fixed.accuracy
        right = evaluation.correct[path[-1]]
        assert (oracle_cost[right] <= evaluation.macs[list(path)].sum()).all(), path
    assert set(_paths_taken(oracle)) <= set(paths(3))


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
            "--threads", "1", "--out", str(tmp_path)]
    assert report_main(args) == 0
    assert report_main([*args, "--dataset", "again", "--names", "little", "middle", "big"]) == 0
    report = json.loads((tmp_path / "cascade.json").read_text())
    assert set(report) == {"cifar10", "again"}  # a later dataset is added, the earlier one kept
    entry = report["cifar10"]
    assert [n["kind"] for n in entry["networks"]] == ["little", "resnet_cifar", "resnet_cifar"]
    macs = [n["macs"] for n in entry["networks"]]
    assert macs == sorted(macs) and entry["singles"][-1]["macs_fraction"] == 1.0
    big = entry["singles"][-1]["accuracy"]
    assert entry["oracle"]["accuracy"] >= max(s["accuracy"] for s in entry["singles"])
    for key in ("learned", "myopic"):  # within 1 % of the big network where chosen
        chosen = entry["operating"][key]
        assert chosen["calibration"]["accuracy"] >= entry["networks"][-1]["calibration_accuracy"] - 0.01 - 1e-12
        assert sum(chosen["evaluation"]["exit_share"]) == pytest.approx(1.0)
        assert abs(chosen["evaluation"]["accuracy"] - big) < 0.1
    zero = entry["curves"]["learned"][0]
    assert zero["setting"] == 0.0 and len(entry["policy"]["stop"]) == 2 and entry["policy"]["jump"][1] is None
    tables = (tmp_path / "cascade_tables.md").read_text()
    assert "## cifar10" in tables and "## again" in tables and "speed-up" in tables
    assert "| always big | - |" in tables and "| 1.00x |" in tables and "| little | `" in tables
    assert (tmp_path / "cascade_cifar10.png").stat().st_size > 10_000


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
