"""Real training on real road-sign images (a few batches): loss falls, checkpoints resume, DDP runs."""
from __future__ import annotations

import os
import subprocess
import sys

import torch

from anytime_perception.nets import build_model
from anytime_perception.nets.centernet import centernet_loss
from anytime_perception.nets.checkpoint import load_checkpoint
from anytime_perception.training.dataset import DetectionDataset
from anytime_perception.training.train import TrainConfig, train


def test_dataset_split_is_deterministic_and_disjoint(road_signs_root):
    train_set = DetectionDataset.from_path(road_signs_root, "train", 128, 8, None)
    val_set = DetectionDataset.from_path(road_signs_root, "val", 128, 8, None)
    train_paths = {s.image_path for s in train_set.samples}
    val_paths = {s.image_path for s in val_set.samples}
    assert len(train_paths) == 560 and len(val_paths) == 140 and not train_paths & val_paths
    assert [s.image_path for s in DetectionDataset.from_path(road_signs_root, "val", 128, 8, None).samples] == \
        [s.image_path for s in val_set.samples]
    image, target = val_set[0]
    assert image.shape == (3, 128, 128) and target["heatmap"].shape == (4, 16, 16)
    assert target["mask"].sum() == len(val_set.samples[0].boxes)


def test_training_lowers_the_loss_and_resumes(road_signs_root, tmp_path):
    cfg = TrainConfig(data=str(road_signs_root), run_dir=str(tmp_path / "run"), model="anywidth_centernet_s3",
                      input_size=128, epochs=1, batch_size=8, limit_batches=6, warmup_epochs=0, lr=3e-3, distill=0.5)
    val = DetectionDataset.from_path(road_signs_root, "val", 128, 8, None)
    images, targets = zip(*(val[i] for i in range(16)))
    batch = torch.stack(images), {k: torch.stack([t[k] for t in targets]) for k in targets[0]}

    def val_loss(state) -> float:
        model = build_model("anywidth_centernet_s3", num_classes=4, input_size=128).eval()
        model.load_state_dict(state["model"])
        with torch.no_grad():
            return float(sum(sum(centernet_loss(p, batch[1]).values()) for p in model(batch[0])))

    torch.manual_seed(0)  # the same seed train() uses: the untrained starting point
    initial = build_model("anywidth_centernet_s3", num_classes=4, input_size=128)
    train(cfg)
    first = load_checkpoint(tmp_path / "run" / "last.pt")
    assert first["epoch"] == 1
    cfg.epochs, cfg.resume = 2, True
    train(cfg)
    second = load_checkpoint(tmp_path / "run" / "last.pt")
    assert second["epoch"] == 2
    assert val_loss(second) < val_loss({"model": initial.state_dict()})


def test_distributed_training_with_torchrun(road_signs_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "anytime_perception.training", "--data", str(road_signs_root), "--run-dir", str(tmp_path / "ddp"),
           "--steps", "train",
           "--input-size", "96", "--epochs", "1", "--batch-size", "4", "--limit-batches", "2"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert load_checkpoint(tmp_path / "ddp" / "last.pt")["epoch"] == 1


def test_fine_tuning_keeps_the_initial_models_box_regression_radius(road_signs_root, tmp_path):
    """A model trained with --regress-radius 1 decodes offsets over (-1, 2) cells; fine-tuning it
    without the flag must keep that range (its offset head was trained for it)."""
    base = dict(data=str(road_signs_root), model="anywidth_centernet_s3", input_size=128, epochs=1, batch_size=4,
                limit_batches=1, warmup_epochs=0, val_every=100)
    train(TrainConfig(**base, run_dir=str(tmp_path / "r1"), regress_radius=1))
    assert load_checkpoint(tmp_path / "r1" / "last.pt")["config"]["offset_range"] == 1
    train(TrainConfig(**base, run_dir=str(tmp_path / "tuned"), init=str(tmp_path / "r1" / "last.pt")))
    assert load_checkpoint(tmp_path / "tuned" / "last.pt")["config"]["offset_range"] == 1
    train(TrainConfig(**base, run_dir=str(tmp_path / "plain")))
    assert "offset_range" not in load_checkpoint(tmp_path / "plain" / "last.pt")["config"]
