"""AppealNet (big/little): the joint loss, the Lagrange multiplier, small real trainings on a CIFAR-10
subset (little network, white-box and black-box joint training, resume), export of the little
AppealNet and the big ResNet to ONNX, the operating-point analysis and the report."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from anytime_perception.data.image_folder import load_image_folder
from appeal_analysis import (BigLittle, apply_threshold, operating_points,
                                                      point_at_degradation, threshold_for_degradation)
from appeal_report import main as report_main
from anytime_perception.export.__main__ import main as export_main
from anytime_perception.export.macs import count_macs
from anytime_perception.nets.appeal import LITTLE_NETS, PAPER_LITTLE, AppealNet, appealnet, build_little
from anytime_perception.nets.macs import counted_macs
from anytime_perception.runtime.model import AnytimeModel
from anytime_perception.runtime.preprocess import Preprocessor
from anytime_perception.training import appeal_run, classifier_run
from anytime_perception.training.appeal import LagrangeMultiplier, appeal_loss
from anytime_perception.training.classification import normalise
from conftest import CIFAR10

SMALL = ["--data", str(CIFAR10), "--train-limit", "1000", "--test-limit", "200", "--batch-size", "50", "--threads", "1"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every test here on one core (tiny tensors are slowest with threads that wait for each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """runs/<dataset>/<little>/{little,white,black} and a ResNet-8 big network, trained on 1000
    CIFAR-10 images for one epoch (white-box resumed for a second), the white-box AppealNet and
    the big network exported. The little network is our ``mobilenet_w05_s2`` option (a tenth of the
    paper's MACs, to keep the test short); the black-box run uses the ``mlp`` q head option."""
    assert CIFAR10.is_file(), f"real data expected at {CIFAR10}"
    root = tmp_path_factory.mktemp("big_little")
    run = root / "cifar10" / "mobilenet_w05_s2"
    assert classifier_run.main([*SMALL, "--depth", "8", "--epochs", "1", "--out", str(root / "cifar10/resnet8")]) == 0
    assert appeal_run.main(["little", *SMALL, "--arch", "mobilenet_w05_s2", "--epochs", "1", "--lr", "0.05",
                            "--out", str(run / "little")]) == 0
    joint = ["joint", *SMALL, "--little", str(run / "little/last.pt")]
    big = ["--big", str(root / "cifar10/resnet8/last.pt")]
    assert appeal_run.main([*joint, *big, "--epochs", "1", "--out", str(run / "white")]) == 0
    (run / "white_epoch1.json").write_text((run / "white/result.json").read_text())
    assert appeal_run.main([*joint, *big, "--epochs", "2", "--resume", "--out", str(run / "white")]) == 0
    assert appeal_run.main([*joint, "--black-box", "--predictor-head", "mlp", "--epochs", "1",
                            "--out", str(run / "black")]) == 0
    export_main(["--checkpoint", str(run / "white/last.pt"), "--out", str(root / "models/appeal")])
    export_main(["--checkpoint", str(root / "cifar10/resnet8/last.pt"), "--out", str(root / "models/big")])
    return root


def test_joint_loss_matches_a_hand_computation():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    q = torch.tensor([0.9, 0.2, 0.5])
    big = torch.tensor([0.1, 0.3, 2.0])
    ce = [np.log(1 + np.exp(-2.0)), np.log(1 + np.exp(1.0)), np.log(2.0)]  # two-class cross-entropies
    expected = np.mean([qi * c + (1 - qi) * b for qi, c, b in zip((0.9, 0.2, 0.5), ce, (0.1, 0.3, 2.0))])
    predictor = -np.mean(np.log([0.9, 0.2, 0.5]))
    loss, got = appeal_loss(logits, q, labels, big, beta=0.7)
    assert got.item() == pytest.approx(predictor, rel=1e-6)
    assert loss.item() == pytest.approx(expected + 0.7 * predictor, rel=1e-6)
    black, _ = appeal_loss(logits, q, labels, torch.zeros(3), beta=0.0)  # black-box: the big net is always right
    assert black.item() == pytest.approx(np.mean([qi * c for qi, c in zip((0.9, 0.2, 0.5), ce)]), rel=1e-6)


def test_lagrange_multiplier_moves_the_predictor_loss_to_its_target():
    m = LagrangeMultiplier(beta=1.0, target=0.5)
    assert m.update(0.8) == pytest.approx(1 / 0.99) and m.update(0.3) == pytest.approx(1 / 0.99 / 1.01)

    def train(multiplier: LagrangeMultiplier) -> list[float]:
        """The predictor of 8 inputs the little network always gets wrong (black-box): without a
        cost q falls to beta / loss, the multiplier must raise beta until mean(-log q) = target."""
        z = torch.zeros(8, requires_grad=True)
        logits, labels = torch.tensor([[0.0, 2.0]]).repeat(8, 1), torch.zeros(8, dtype=torch.long)
        history = []
        for _ in range(800):
            loss, predictor = appeal_loss(logits, torch.sigmoid(z), labels, torch.zeros(8), multiplier.beta)
            multiplier.update(float(predictor))
            z.grad = None
            loss.backward()
            with torch.no_grad():
                z -= 4.0 * z.grad  # plain gradient descent
            history.append(float(predictor))
        return history

    adjusted = train(LagrangeMultiplier(beta=0.1, target=0.5))
    frozen = train(LagrangeMultiplier(beta=0.1, target=0.5, up=1.0, down=1.0))
    assert np.mean(adjusted[-200:]) == pytest.approx(0.5, abs=0.05)
    assert np.mean(frozen[-200:]) > 2.0  # q -> beta / l0 = 0.1 / 2.13 without the adjustment


@pytest.mark.parametrize("arch", sorted(LITTLE_NETS))
def test_little_networks_are_small_two_head_classifiers(arch):
    net = appealnet(arch, 43).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = net(x)
        assert torch.allclose(out["logits"], net.little(x), atol=1e-6)  # features() + classifier == forward
    assert out["logits"].shape == (2, 43) and out["q"].shape == (2,) and ((out["q"] > 0) & (out["q"] < 1)).all()
    macs = counted_macs(lambda: net(torch.zeros(1, 3, 32, 32)), net)
    resnet32, resnet110 = 69_124_736, 253_144_704
    assert 1e6 < macs < resnet110 / 5, macs  # the paper's little / big ratio is 94.6 / 2520
    if arch.endswith("_s2"):  # our options: a tenth of the smaller big network
        assert macs < resnet32 / 10, macs


def _first_conv(net: torch.nn.Module) -> torch.nn.Conv2d:
    return next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))


def test_defaults_are_the_papers_little_network_and_head_and_ours_are_named_options():
    """CIFAR-10: a full-width MobileNet without a stride-2 stem; GTSRB: width 0.5 (AppealNet B.4);
    one fully connected layer as q head (Sec. 4.1); ours (width 0.5, stride-2 stem; mlp head) by name."""
    assert PAPER_LITTLE == {"cifar10": "mobilenet", "gtsrb": "mobilenet_w05"}
    paper, gtsrb, ours = (build_little(a, 10) for a in ("mobilenet", "mobilenet_w05", "mobilenet_w05_s2"))
    assert _first_conv(paper).stride == (1, 1) and _first_conv(gtsrb).stride == (1, 1)
    assert _first_conv(ours).stride == (2, 2)
    assert (paper.num_features, gtsrb.num_features, ours.num_features) == (1024, 512, 512)
    assert _first_conv(paper).out_channels == 32 and _first_conv(ours).out_channels == 16
    macs = {a: counted_macs(lambda: n(torch.zeros(1, 3, 32, 32)), n)
            for a, n in (("paper", paper.eval()), ("ours", ours.eval()))}
    assert macs["paper"] > 10 * macs["ours"]
    assert _first_conv(build_little("shufflenet", 10)).stride == (1, 1)
    assert _first_conv(build_little("shufflenet_s2", 10)).stride == (2, 2)
    little = appeal_run._parse(["little", "--data", "d", "--out", "o"])
    joint = appeal_run._parse(["joint", "--data", "d", "--out", "o", "--little", "l", "--black-box"])
    assert little.arch == "mobilenet" and joint.predictor_head == "linear"
    assert isinstance(AppealNet(ours).predictor, torch.nn.Linear)
    with pytest.raises(ValueError, match="unknown little network"):
        build_little("mobilenet_w07", 10)


def test_mlp_head_is_an_option_and_a_checkpoint_rebuilds_its_own_head():
    mlp = appealnet("mobilenet_w05_s2", 10, "mlp").eval()
    assert isinstance(mlp.predictor, torch.nn.Sequential) and mlp.predictor[0].out_features == 128
    rebuilt = appealnet("mobilenet_w05_s2", 10).eval()  # the default (linear) head, as checkpoint.py rebuilds
    rebuilt.load_state_dict(mlp.state_dict())
    assert rebuilt.head == "mlp"
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x)["q"], mlp(x)["q"])
    back = appealnet("mobilenet_w05_s2", 10, "mlp")
    back.load_state_dict(appealnet("mobilenet_w05_s2", 10).state_dict())
    assert back.head == "linear" and isinstance(back.predictor, torch.nn.Linear)
    with pytest.raises(ValueError, match="unknown predictor head"):
        appealnet("mobilenet_w05_s2", 10, "deep")


def test_cli_trains_resumes_and_records(trained):
    run = trained / "cifar10/mobilenet_w05_s2"
    first = json.loads((run / "white_epoch1.json").read_text())
    white = json.loads((run / "white/result.json").read_text())
    black = json.loads((run / "black/result.json").read_text())
    assert white["method"] == "white-box" and black["method"] == "black-box" and black["big_macs"] is None
    assert white["predictor_head"] == "linear" and black["predictor_head"] == "mlp"
    assert white["arch"] == black["arch"] == "mobilenet_w05_s2"
    assert [e["epoch"] for e in white["log"]] == [1, 2] and white["log"][0] == first["log"][0]  # resumed, not redone
    assert white["wall_s"] > first["wall_s"] and "--resume" in white["command"]
    state = torch.load(run / "white/last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["multiplier"]["beta"] == pytest.approx(white["beta"])
    assert white["beta"] != pytest.approx(0.1)  # the multiplier moved with every step
    little_macs = json.loads((run / "little/result.json").read_text())["macs"]
    assert white["macs"] == little_macs + 512  # + one linear layer on 512 features
    assert black["macs"] == little_macs + 512 * 128 + 128  # + the mlp head
    black_net, _ = appeal_run.appeal_from_state(torch.load(run / "black/last.pt", weights_only=True))
    assert black_net.head == "mlp"
    little = torch.load(run / "little/last.pt", weights_only=True)["model"]
    joint = {k.removeprefix("little."): v for k, v in state["model"].items()}
    assert any(not torch.equal(v, joint[k]) for k, v in little.items())  # joint training updates the little net


def test_bad_inputs_end_with_one_error_line(trained, capsys):
    run = trained / "cifar10/mobilenet_w05_s2"
    big = str(trained / "cifar10/resnet8/last.pt")
    assert appeal_run.main(["joint", *SMALL, "--little", big, "--black-box", "--out", str(trained / "x")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {big}: a resnet_cifar checkpoint; expected little"]
    not_big = str(run / "white/last.pt")
    assert appeal_run.main(["joint", *SMALL, "--little", str(run / "little/last.pt"), "--big", not_big,
                            "--out", str(trained / "x")]) == 2
    assert "expected resnet_cifar" in capsys.readouterr().err
    args = ["little", "--data", str(trained / "missing.zip"), "--out", str(trained / "x")]
    assert appeal_run.main(args) == 2
    assert capsys.readouterr().err.startswith("error: dataset not found")
    assert appeal_run.main(["joint", *SMALL, "--little", str(run / "little/last.pt"), "--black-box", "--beta-up", "1.2",
                            "--out", str(trained / "x")]) == 2
    assert "--beta-up" in capsys.readouterr().err


def test_exported_models_reproduce_torch_logits_and_q(trained):
    net, meta = appeal_run.appeal_from_state(torch.load(trained / "cifar10/mobilenet_w05_s2/white/last.pt",
                                                        weights_only=True))
    big, big_meta = classifier_run.load_resnet(trained / "cifar10/resnet8/last.pt")
    images = load_image_folder(CIFAR10, "test").subset(8, 1).images
    for directory, model_meta in (("appeal", meta), ("big", big_meta)):
        model = AnytimeModel(trained / "models" / directory)
        (stage,) = model.manifest.stages
        assert stage.inputs == ("image",) and stage.macs == count_macs(stage.file)
        assert model.manifest.input.mean == pytest.approx([255 * m for m in model_meta["mean"]])  # pixel units
        with torch.no_grad():
            expected = (net if directory == "appeal" else big)(normalise(images, model_meta["mean"], model_meta["std"]))
        preprocess = Preprocessor(model.manifest.input)
        for i, image in enumerate(images):  # the deployed path: uint8 image -> runtime preprocessing -> ONNX
            _, heads, confidences = model.run_stage_outputs(0, preprocess(image)[0], {})
            if directory == "appeal":
                assert stage.confidence_outputs == {"appeal": "q"} and stage.macs == meta["macs"]
                np.testing.assert_allclose(heads["logits"][0], expected["logits"][i], atol=1e-4)
                assert confidences["appeal"] == pytest.approx(float(expected["q"][i]), abs=1e-5)
            else:
                assert stage.confidence_outputs == {}
                np.testing.assert_allclose(heads["logits"][0], expected[i], atol=1e-4)


def _synthetic(seed: int = 0, n: int = 400) -> BigLittle:
    rng = np.random.default_rng(seed)
    scores = rng.random(n).round(2)  # ties on purpose
    little = rng.random(n) < 0.3 + 0.6 * scores  # surer inputs are more often right
    return BigLittle(scores, little, rng.random(n) < 0.9, little_macs=4e6, big_macs=1.25e8)


def test_operating_points_add_up():
    pair = _synthetic()
    points = operating_points(pair)
    for p in points:
        assert p.skipping_rate + p.appealing_rate == pytest.approx(1.0)
        assert p.macs == pytest.approx(4e6 + p.appealing_rate * 1.25e8)
        assert p == apply_threshold(pair, p.threshold)  # the sweep equals thresholding input by input
    everything = points[0]
    assert everything.appealing_rate == 1.0 and everything.degradation == 0.0  # appeal everything: no degradation
    assert everything.accuracy == pair.big_accuracy
    assert points[-1].skipping_rate == 1.0 and points[-1].accuracy == pytest.approx(pair.little_correct.mean())
    assert apply_threshold(pair, threshold_for_degradation(pair, 0.0)).degradation <= 0.0
    macs = [point_at_degradation(pair, _synthetic(1), d).macs for d in (0.0, 0.01, 0.05, 0.2)]
    assert macs == sorted(macs, reverse=True) and macs[-1] < macs[0]
    oracle = BigLittle.of(pair.scores, np.eye(2)[pair.little_correct.astype(int)], None, np.ones(400, int), 1, 10)
    assert oracle.big_accuracy == 1.0 and (oracle.little_correct == pair.little_correct).all()


def test_report_writes_tables_json_and_score_plots(trained):
    out = trained / "report"
    assert report_main(["--runs", str(trained), "--out", str(out), "--limit", "200"]) == 0
    report = json.loads((out / "appealnet.json").read_text())["cifar10/mobilenet_w05_s2"]
    assert report["little_arch"] == "mobilenet_w05_s2" and report["predictor_head"] == "linear / mlp"
    table1, table2 = report["table1"], report["table2"]
    assert set(table1) == {"0", "0.001", "0.005", "0.01"} and set(table2) == {"0.005", "0.01", "0.02", "0.05"}
    macs = report["white_macs"]
    for rule, point in table1["0"].items():
        little = macs["appeal"] if rule == "appeal" else macs["little"]
        assert point["macs"] == pytest.approx(little + point["appealing_rate"] * macs["big"])
    assert all(p["skipping_rate"] + p["appealing_rate"] == pytest.approx(1.0) for p in table2["0.05"].values())
    text = (out / "appealnet_tables.md").read_text()
    assert "Table 1" in text and "Table 2" in text
    assert ("| cifar10 | mobilenet_w05_s2 (ours: MobileNet width 0.5, stride-2 stem; linear q head (paper) / "
            "mlp q head (ours)) | 0.5 % |") in text  # every row names its options
    # the paper's rows next to ours, and the paper's default, not run here, says so
    assert "| cifar10 | paper, Table 1 row CIFAR-10 | MobileNet | 93.77 / 92.40 / 92.31 | 0 % | 324.5 |" in text
    assert "| paper, Table 2 row MobileNet | MobileNet | 92.40 / 92.35 | AppealNet q(x) | 25.59 % |" in text
    assert "| cifar10 | ours, paper's default | mobilenet (paper's CIFAR-10 MobileNet" in text
    assert "not measured in this session" in text and "Settings (cifar10)" in text
    assert (out / "appealnet_scores_cifar10_mobilenet_w05_s2.png").stat().st_size > 10_000
    (out / "appealnet_tables.md").unlink()
    assert report_main(["--render-only", "--out", str(out)]) == 0  # the tables again from the JSON alone
    again = (out / "appealnet_tables.md").read_text()
    assert again.split("\n", 3)[3] == text.split("\n", 3)[3]  # the same tables; only the "generated by" line differs
    assert report_main(["--render-only", "--out", str(trained / "empty")]) == 2


@pytest.mark.parametrize("old_name, built", [("mobilenet", "mobilenet_w05_s2"), ("shufflenet", "shufflenet_s2")])
def test_checkpoints_from_before_the_paper_names_rebuild_the_network_they_were(old_name, built):
    """'mobilenet' / 'shufflenet' meant our stride-2 networks before the paper's took the names: a
    checkpoint without ``little_layout`` must come back as what it was, not as the paper's."""
    from anytime_perception.nets.checkpoint import classifier_checkpoint, model_from_state

    old = build_little(built, 10)
    meta = {"kind": "little", "arch": old_name, "classes": [str(i) for i in range(10)], "mean": [0.5] * 3,
            "std": [0.25] * 3, "flip": True, "input_size": 32}
    x = torch.zeros(1, 3, 32, 32)

    def macs(net):
        return counted_macs(lambda: net(x), net)

    model, _ = model_from_state(classifier_checkpoint(old.state_dict(), meta))
    assert macs(model) == macs(old)
    new, _ = model_from_state(classifier_checkpoint(build_little(old_name, 10).state_dict(),
                                                    {**meta, "little_layout": 2}))
    assert macs(new) > macs(old)  # the paper's network now
