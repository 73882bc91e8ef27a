"""The SteppingNet detector family on the shipped layout (``stepping_centernet_patch_s3``): nesting,
MACs against the any-width detector and the exported graphs, the suppressed AdamW update, the
construction rules on real road-sign batches, and the one training command."""
from __future__ import annotations

import subprocess
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from anytime_perception.export.stages import export_stages, verify_stages
from anytime_perception.nets import build_model
from anytime_perception.nets.macs import counted_macs
from anytime_perception.nets.stepping_centernet import SteppingCenterNet, SteppingCenterNetConfig
from anytime_perception.runtime import AnytimeModel
from anytime_perception.runtime.manifest import load_manifest
from anytime_perception.nets.centernet import centernet_loss
from anytime_perception.training.dataset import DetectionDataset
from anytime_perception.training.stepping_detector import (SteppingOptions, SuppressedUpdate, construct,
                                                           layer_floors)

CLASSES = ("speedlimit", "crosswalk", "trafficlight", "stop")


def _random_levels(model: SteppingCenterNet, seed: int = 0) -> None:
    """Every layer but the pinned neck: random levels, each stage keeping at least one neuron."""
    g = torch.Generator().manual_seed(seed)
    for l in range(model.num_hidden - 1):
        levels = torch.randint(0, model.num_subnets + 1, (model.widths[l],), generator=g)
        levels[: model.num_subnets] = torch.arange(model.num_subnets)
        model.set_levels(l, levels)


def test_any_width_levels_give_the_any_width_detectors_macs_stage_by_stage():
    ours = build_model("stepping_centernet_patch_s3", num_classes=4, expansion=1.0)
    ours.any_width_levels()
    reference = build_model("anywidth_centernet_patch_s3", num_classes=4).eval()
    image, carry, counted = torch.zeros(1, 3, 320, 320), {}, []
    for k in range(3):
        def run(k=k):
            new, _ = reference.forward_stage(image, carry, k)
            carry.update(new)
        counted.append(counted_macs(run, reference))
    assert [ours.macs(k) for k in range(3)] == list(np.cumsum(counted))


def test_stages_reuse_the_carry_and_later_neurons_never_change_earlier_stages():
    model = build_model("stepping_centernet_patch_s3", num_classes=4, input_size=64, expansion=1.2)
    _random_levels(model)
    model.eval()
    image = torch.randn(2, 3, 64, 64)
    before = model(image)
    with torch.no_grad():  # perturb every weight of level-2 neurons: stages 0 and 1 must not move
        for l in range(model.num_hidden):
            idx = model.groups(l)[2]
            model.convs[model.layout[l].name].weight[idx] += 1.0
    after = model(image)
    for k in (0, 1):
        for head in before[k]:
            assert torch.equal(before[k][head], after[k][head])
    assert not torch.allclose(before[2]["heatmap"], after[2]["heatmap"])


def test_export_graphs_count_the_models_macs_and_match_torch(tmp_path):
    model = build_model("stepping_centernet_patch_s3", num_classes=4, input_size=64, expansion=1.5)
    _random_levels(model, seed=3)
    model.eval()
    out = tmp_path / "stepping"
    export_stages(model, out, "stepping", CLASSES, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    manifest = load_manifest(out)
    increments = [model.macs(k) - (model.macs(k - 1) if k else 0) for k in range(3)]
    assert [s.macs for s in manifest.stages] == increments
    image = torch.randn(1, 3, 64, 64)
    carry, expected = {}, []
    with torch.no_grad():
        for k in range(3):
            new, heads = model.forward_stage(image, carry, k)
            carry.update(new)
            expected.append(heads)
    assert verify_stages(expected, out, image) < 1e-4
    assert len(list(AnytimeModel(out).stages(image.numpy()))) == 3


def test_suppressed_update_scales_each_stages_update_by_beta_and_spares_unused_weights():
    config = SteppingCenterNetConfig(num_classes=2, input_size=64, expansion=1.0, neck_levels=(4, 4))
    model = SteppingCenterNet(config)
    _random_levels(model, seed=1)
    model.train()
    image = torch.randn(2, 3, 64, 64)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = [p for p, _ in model.weight_owners()]

    def losses():
        return [o["heatmap"].pow(2).mean() + o["size"].pow(2).mean() for o in model(image)]

    state = {k: v.clone() for k, v in model.state_dict().items()}
    g = [torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True) for loss in losses()]
    model.load_state_dict(state)  # the BatchNorm statistics of that pass undone
    SuppressedUpdate(model, torch.optim.SGD(model.parameters(), lr=1.0), beta=0.5)(losses())
    for (p, owner), g0, g1 in zip(model.weight_owners(), *g):
        name = next(n for n, q in model.named_parameters() if q is p)
        g0 = torch.zeros_like(p) if g0 is None else g0
        g1 = torch.zeros_like(p) if g1 is None else g1
        expected = start[name] - torch.where(owner <= 0, g0, 0.0) - torch.where(
            owner <= 1, 0.5 ** (1 - owner).clamp(min=0).float() * g1, 0.0)
        assert torch.allclose(p.detach(), expected, atol=1e-6), name
        removed = owner == model.num_subnets
        assert torch.equal(p.detach()[removed], start[name][removed])


@pytest.mark.parametrize("rule", ["paper", "floors"])
def test_construction_on_road_signs_meets_the_targets_and_the_rule(road_signs_root, rule):
    torch.manual_seed(0)
    size = 128
    model = build_model("stepping_centernet_patch_s3", num_classes=4, input_size=size, expansion=1.3)
    reference = build_model("stepping_centernet_patch_s3", num_classes=4, input_size=size, expansion=1.0)
    reference.any_width_levels()
    targets = tuple(reference.macs(k) for k in range(3))
    data = DetectionDataset.from_path(road_signs_root, "train", size, 8, None)
    loader = DataLoader(torch.utils.data.Subset(data, range(8)), 4)

    def batches():
        while True:
            yield from loader

    def stage_losses(outputs, targets_batch):
        return [sum(centernet_loss(o, targets_batch).values()) for o in outputs]

    options = SteppingOptions(targets, iterations=2, batches=1, rule=rule)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = construct(model, batches(), stage_losses, SuppressedUpdate(model, optimizer, 0.9), options,
                        log=lambda _: None)
    assert len(history) == 2 and history[0]["moved"] > 0
    macs = [model.macs(k) for k in range(3)]
    for k, (m, t) in enumerate(zip(macs, targets)):  # each stage lands at its target or just under it
        assert m <= t * 1.02 and m >= t * 0.9, (k, macs, targets)
    counts = model.level_counts()
    assert counts[model.neck_index, :3].tolist() == [16, 24, 40]  # the heads' inputs stay pinned
    if rule == "floors":
        for l, floor in enumerate(layer_floors(model, options.floor)):
            assert (counts[l, :3].cumsum(0) >= torch.tensor(floor)).all(), (l, counts[l].tolist(), floor)


def test_one_command_constructs_retrains_exports_and_resumes_without_constructing_again(road_signs_root, tmp_path):
    run, out = tmp_path / "run", tmp_path / "model"
    args = ["anytime_train", "--data", str(road_signs_root), "--model", "stepping_centernet_patch_s3",
            "--run-dir", str(run), "--out", str(out), "--input-size", "128", "--expansion", "1.2",
            "--limit-batches", "1", "--stepping-iterations", "2", "--stepping-batches", "1",
            "--stepping-rule", "floors", "--threads", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(args + ["--epochs", "1", "--steps", "train", "export"], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "construction 2/2" in done.stdout
    constructed = (run / "construction.csv").read_text()
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["family"] == "stepping_centernet_patch_s3" and state["config"]["expansion"] == 1.2
    assert state["construction"]["rule"] == "floors" and len(state["construction"]["macs"]) == 3
    manifest = load_manifest(out)
    assert np.cumsum([s.macs for s in manifest.stages]).tolist() == state["construction"]["macs"]
    done = subprocess.run(args + ["--epochs", "2", "--resume", "--steps", "train"], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "construction" not in done.stdout and (run / "construction.csv").read_text() == constructed
    resumed = torch.load(run / "last.pt", weights_only=True)
    assert resumed["epoch"] == 2
    for key, value in state["model"].items():
        if key.startswith("level_"):
            assert torch.equal(resumed["model"][key], value), key
    bad = subprocess.run(args + ["--epochs", "1", "--stepping-rule", "magic"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert bad.returncode == 2 and "--stepping-rule must be one of" in bad.stderr and "Traceback" not in bad.stderr


def test_checkpoint_rebuilds_the_constructed_levels(tmp_path):
    from anytime_perception.nets.checkpoint import build_from_checkpoint, make_checkpoint
    from anytime_perception.training.train import input_spec
    model = build_model("stepping_centernet_patch_s3", num_classes=4, input_size=64, expansion=1.4)
    _random_levels(model, seed=5)
    path = Path(tmp_path) / "c.pt"
    torch.save(make_checkpoint(model, "stepping_centernet_patch_s3", CLASSES, input_spec(64)), path)
    rebuilt = build_from_checkpoint(torch.load(path, weights_only=True))
    assert rebuilt.config.expansion == 1.4
    assert torch.equal(rebuilt.level_counts(), model.level_counts())
    assert [rebuilt.macs(k) for k in range(3)] == [model.macs(k) for k in range(3)]
