"""Training loop for anytime detectors: all stages trained jointly, DDP-ready, resumable.

Run through ``python -m anytime_perception.training`` (single process) or
``torchrun --nproc_per_node N -m anytime_perception.training`` (DistributedDataParallel; gloo on
CPU, nccl on GPUs).
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from ..nets import build_model
from ..nets.centernet import centernet_loss, heatmap_distillation
from .dataset import RoadSignDetection

__all__ = ["TrainConfig", "train", "load_checkpoint"]


@dataclass
class TrainConfig:
    """Options of one training run (the CLI mirrors them one to one)."""

    data: str
    out: str = "runs/anywidth"
    model: str = "anywidth_centernet_s3"
    input_size: int = 320
    epochs: int = 60
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup_epochs: int = 2
    seed: int = 0
    resume: bool = False
    limit_batches: int = 0  # > 0: stop each epoch after this many batches (smoke runs)
    distill: float = 0.0  # weight of in-place heatmap distillation from the last stage to the others


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint without unpickling arbitrary objects (``weights_only``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _distributed() -> tuple[int, int]:
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def train(cfg: TrainConfig) -> Path:
    """Train, checkpoint every epoch to ``<out>/last.pt``; returns the checkpoint path."""
    rank, world = _distributed()
    torch.manual_seed(cfg.seed)
    device = torch.device(f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    model = build_model(cfg.model, num_classes=4, input_size=cfg.input_size).to(device)
    stride = model.config.output_stride
    dataset = RoadSignDetection(cfg.data, "train", cfg.input_size, stride, augment=True, seed=cfg.seed + rank)
    sampler = DistributedSampler(dataset, world, rank, seed=cfg.seed) if world > 1 else None
    loader = DataLoader(dataset, cfg.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = cfg.limit_batches or len(loader)
    total, warmup = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    out = Path(cfg.out)
    ckpt_path = out / "last.pt"
    start_epoch = 0
    if cfg.resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = state["epoch"]
    net = DistributedDataParallel(model) if world > 1 else model
    out.mkdir(parents=True, exist_ok=True)
    for epoch in range(start_epoch, cfg.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        bar = tqdm(loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=rank != 0)
        for step, (images, targets) in enumerate(bar):
            if step >= steps_per_epoch:
                break
            images = images.to(device)
            targets = {k: v.to(device) for k, v in targets.items()}
            outputs = net(images)
            stage_losses = [sum(centernet_loss(p, targets).values())
                            + cfg.distill * heatmap_distillation(p, outputs[-1], targets) for p in outputs]
            loss = sum(stage_losses)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.set_postfix({f"L{k}": f"{v.item():.2f}" for k, v in enumerate(stage_losses)})
        if rank == 0:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "epoch": epoch + 1,
                        "config": asdict(cfg)}, ckpt_path)
    if world > 1:
        dist.destroy_process_group()
    return ckpt_path
