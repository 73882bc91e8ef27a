"""Training loop for anytime detectors on any labelled set: all stages trained jointly, validated
every few epochs (COCO mAP per stage), best and last checkpoints kept, resumable, DDP-ready.

Run through ``anytime_train`` / ``python -m anytime_perception.training`` (train -> export ->
calibration -> evaluation), or ``torchrun --nproc_per_node N -m anytime_perception.training``
(DistributedDataParallel; gloo on CPU, nccl on GPUs).

The run folder keeps ``last.pt`` (every epoch), ``best.pt`` (best validation fitness: the mean
over stages of COCO mAP@0.5:0.95), ``results.csv`` (one row per epoch) and ``results.png``.
"""
from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from ..data import DetectionSet, open_detection, read_rgb
from ..data.augment import AugmentConfig
from ..metrics.detection import score_stages
from ..letterbox import letterbox
from ..nets import build_model
from ..nets.centernet import centernet_loss, heatmap_distillation
from ..nets.checkpoint import load_checkpoint, load_matching, make_checkpoint
from ..runtime.decoder import decode_centernet
from ..runtime.manifest import DecoderSpec
from .dataset import MEAN, PAD_VALUE, STD, DetectionDataset
from .stepping_detector import RULES, SteppingOptions, SuppressedUpdate, construct, is_stepping, parse_targets

__all__ = ["TrainConfig", "train", "load_checkpoint", "Validator", "input_spec", "choose_labels"]


@dataclass
class TrainConfig:
    """Options of one training run (the CLI mirrors them one to one). The defaults are the shipped
    detector's recipe (``models/road_signs_anywidth``)."""

    data: str
    run_dir: str = "runs/anytime"
    model: str = "anywidth_centernet_patch_s3"
    input_size: int = 320
    epochs: int = 70
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup_epochs: int = 2
    seed: int = 0
    resume: bool = False
    limit_batches: int = 0  # > 0: stop each epoch after this many batches (smoke runs)
    distill: float = 1.0  # weight of in-place heatmap distillation from the last stage to the others
    format: str = "auto"  # auto | coco | yolo | voc
    val_data: str = ""  # a separate validation set (any format); default: the set's own val split
    images: str = ""  # COCO: folder of the images the JSON names
    classes: str = ""  # comma-separated: train only these classes, in this order
    strict: bool = False  # stop on any data problem instead of skipping the sample
    val_every: int = 5  # validate every K epochs (and after the last)
    flip: float = 0.0  # horizontal flip probability (off: mirrored signs are other signs)
    scale_min: float = 0.6
    scale_max: float = 1.4
    init: str = ""  # start from this model directory or checkpoint (fine-tuning)
    regress_radius: int = 0  # also regress boxes at cells this close to a box's centre cell (0: centre only)
    giou: float = 0.0  # weight of a GIoU loss on the decoded boxes where they are regressed (0: off)
    # SteppingNet families (``--model stepping_centernet_patch_s3``; ``training.stepping_detector``)
    expansion: float = 0.0  # width ratio of the expanded network (0: the family's, the paper's 1.8)
    stepping_targets: str = ""  # cumulative stage MACs, comma-separated, or a model directory (default: any-width's)
    stepping_iterations: int = 40  # construction iterations N_t (the paper: 300)
    stepping_batches: int = 8  # training batches per construction iteration m (the paper: 100-250)
    stepping_beta: float = 0.9  # learning-rate suppression beta^(j-i) on the update (1: off)
    stepping_rule: str = "paper"  # construction rule: paper (importance ranking) | floors (ours)
    stepping_floor: float = 0.75  # floors rule: share of the any-width layer widths every stage keeps

    def __post_init__(self) -> None:
        if self.regress_radius < 0 or self.giou < 0:
            raise ValueError(f"--regress-radius and --giou must be >= 0, got {self.regress_radius} and {self.giou}")
        if self.expansion and self.expansion < 1.0:
            raise ValueError(f"--expansion must be >= 1 (0: the family's default), got {self.expansion}")
        if self.stepping_rule not in RULES:
            raise ValueError(f"--stepping-rule must be one of {RULES}, got {self.stepping_rule!r}")
        if self.stepping_iterations < 1 or self.stepping_batches < 1:
            raise ValueError("--stepping-iterations and --stepping-batches must be >= 1")


def input_spec(size: int) -> dict:
    """The detectors' input convention: letterbox to ``size``, (pixel - mean) / std on 0..255."""
    return {"size": size, "mean": [float(m) for m in MEAN], "std": [float(s) for s in STD], "pad_value": PAD_VALUE}


def choose_labels(data_labels: tuple[str, ...], classes: str, init_labels: tuple[str, ...] | None) -> tuple[str, ...]:
    """The run's class order: ``--classes`` if given; else a fine-tuned model's own order when it
    has exactly the data's classes (its heads keep their meaning); else the data's."""
    if classes:
        names = tuple(n.strip() for n in classes.split(",") if n.strip())
        if len(set(names)) != len(names):
            raise ValueError(f"--classes names a class twice: {classes}")
        return names
    if init_labels is not None and set(init_labels) == set(data_labels):
        return tuple(init_labels)
    return data_labels


class Validator:
    """COCO mAP per stage of the torch model on a validation set, decoded by the runtime decoder
    (as the exported model will be): letterboxed inputs prepared once."""

    def __init__(self, data: DetectionSet, size: int, stride: int, labels: tuple[str, ...],
                 batch_size: int = 16, score_threshold: float = 0.01, offset_range: int = 0) -> None:
        self.data, self.labels, self.batch_size, self.score_threshold = data, labels, batch_size, score_threshold
        self.decoder = DecoderSpec("centernet", stride, offset_range=offset_range)
        self.inputs, self.boxes = [], []
        for sample in data.samples:
            canvas, box = letterbox(read_rgb(sample.image_path), size, PAD_VALUE)
            self.inputs.append(torch.from_numpy(((canvas.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1).copy()))
            self.boxes.append(box)

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> list[dict]:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        detections: list[list] = []
        for start in range(0, len(self.inputs), self.batch_size):
            outputs = model(torch.stack(self.inputs[start:start + self.batch_size]).to(device))
            detections = detections or [[] for _ in outputs]
            for k, heads in enumerate(outputs):
                for i in range(len(heads["heatmap"])):
                    one = {h: v[i:i + 1].cpu().numpy() for h, v in heads.items()}
                    detections[k].append(decode_centernet(one, self.decoder, self.boxes[start + i], self.labels,
                                                          self.score_threshold))
        model.train(was_training)
        return score_stages(self.data, detections, self.labels)


def _distributed() -> tuple[int, int]:
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def open_training_sets(cfg: TrainConfig, verbose: bool = True) -> tuple[DetectionSet, DetectionSet]:
    """The training and validation sets of ``cfg``, restricted to the classes it trains (the data's,
    ``--classes`` or, fine-tuning, the initial model's order first); read once per run."""
    init_labels = tuple(load_checkpoint(cfg.init)["labels"]) if cfg.init else None
    train_set, val_set = open_detection(cfg.data, cfg.format, val_data=cfg.val_data or None,
                                        images=cfg.images or None, seed=cfg.seed, strict=cfg.strict)
    labels = choose_labels(train_set.labels, cfg.classes, init_labels)
    train_set, val_set = train_set.select_classes(labels), val_set.select_classes(labels, allow_missing=True)
    if verbose:
        for issue in train_set.issues + [i for i in val_set.issues if i not in train_set.issues]:
            print(f"skipped: {issue}")
        print(f"train: {train_set.summary()}\nval:   {val_set.summary()}")
    return train_set, val_set


def _write_row(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def plot_results(csv_path: Path, out: Path) -> Path | None:
    """Training loss per stage and validation mAP per stage against epochs (needs matplotlib)."""
    try:
        from ..eval.plots import plt, save_plot
    except ImportError:
        print("matplotlib is not installed: no results.png")
        return None
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5), dpi=110)
    stages = sorted({int(k.split("_s")[-1]) for k in rows[0] if k.startswith("loss_s")})
    for k in stages:
        axes[0].plot(epochs, [float(r[f"loss_s{k}"]) for r in rows], label=f"stage {k}")
        for ax, metric in ((axes[1], "map50"), (axes[2], "map")):
            points = [(e, float(r[f"val_{metric}_s{k}"])) for e, r in zip(epochs, rows) if r[f"val_{metric}_s{k}"]]
            if points:
                ax.plot(*zip(*points), "o-", label=f"stage {k}")
    for ax, title in zip(axes, ("training loss", "val mAP@0.5", "val mAP@0.5:0.95")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
    return save_plot(fig, out, list(axes), legend_size=8)


def stepping_options(model: nn.Module, cfg: TrainConfig) -> SteppingOptions:
    """The SteppingNet settings of ``cfg`` for ``model``; the MAC targets default to the any-width
    detector's stages at the same classes and input size (the shipped recipe's)."""
    if cfg.stepping_targets:
        from ..runtime.manifest import load_manifest
        targets = parse_targets(cfg.stepping_targets, lambda d: [s.macs for s in load_manifest(d).stages])
    else:
        reference = build_model("stepping_centernet_patch_s3", num_classes=model.config.num_classes,
                                input_size=model.config.input_size, expansion=1.0)
        reference.any_width_levels()
        targets = tuple(reference.macs(k) for k in range(reference.num_stages))
    if len(targets) != model.num_stages:
        raise ValueError(f"{len(targets)} MAC targets for {model.num_stages} stages: {list(targets)}")
    return SteppingOptions(targets, cfg.stepping_iterations, cfg.stepping_batches, cfg.stepping_beta,
                           rule=cfg.stepping_rule, floor=cfg.stepping_floor)


def _endless(loader: DataLoader):
    while True:
        yield from loader


def _construct(model: nn.Module, cfg: TrainConfig, loader: DataLoader, losses_of, out: Path, rank: int) -> dict:
    """SteppingNet's construction before the epochs (``training.stepping_detector.construct``), with
    its own AdamW at the run's learning rate; writes ``construction.csv`` and returns what the
    checkpoints keep (targets, rule, wall time, MACs per stage, neurons per layer and level)."""
    options = stepping_options(model, cfg)
    out.mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    started = time.time()
    history = construct(model, _endless(loader), losses_of, SuppressedUpdate(model, optimizer, options.beta), options,
                        log=print if rank == 0 else (lambda _: None))
    with (out / "construction.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["iteration", "moved", *(f"macs_s{k}" for k in range(model.num_stages)),
                         *(f"loss_s{k}" for k in range(model.num_stages))])
        for row in history:
            writer.writerow([row["iteration"], row["moved"], *row["macs"], *(round(v, 5) for v in row["loss"])])
    return {"targets": list(options.targets), "rule": options.rule, "floor": options.floor, "beta": options.beta,
            "iterations": options.iterations, "batches": options.batches, "wall_s": round(time.time() - started, 1),
            "macs": [model.macs(k) for k in range(model.num_stages)],
            "level_counts": model.level_counts().tolist()}


def train(cfg: TrainConfig, sets: tuple[DetectionSet, DetectionSet] | None = None) -> Path:
    """Train on ``sets`` (default: opened from ``cfg``); returns the best checkpoint
    (``<run_dir>/best.pt``)."""
    rank, world = _distributed()
    torch.manual_seed(cfg.seed)
    device = torch.device(f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    init = load_checkpoint(cfg.init) if cfg.init else None
    train_set, val_set = sets or open_training_sets(cfg, verbose=rank == 0)
    labels = train_set.labels
    family = init["family"] if init else cfg.model
    # fine-tuning keeps the initial model's box regression radius unless one is asked for: its
    # offset head was trained for that range
    radius = cfg.regress_radius or (int(init["config"].get("offset_range", 0)) if init else 0)
    extra = {"offset_range": radius} if radius else {}
    if cfg.expansion:
        extra["expansion"] = cfg.expansion
    elif init is not None and "expansion" in init["config"]:
        extra["expansion"] = init["config"]["expansion"]
    model = build_model(family, num_classes=len(labels), input_size=cfg.input_size, **extra)
    stepping = is_stepping(model)
    if stepping and world > 1:
        raise ValueError(f"{family}: SteppingNet training runs in one process (its per-stage steps are not DDP-ready)")
    if init is not None:
        skipped = load_matching(model, init, labels)
        if rank == 0:
            print(f"initialised from {cfg.init} ({family}); re-initialised: {', '.join(skipped) or 'nothing'}")
    model = model.to(device)
    stride = model.config.output_stride
    augment = AugmentConfig(cfg.flip, cfg.scale_min, cfg.scale_max)
    dataset = DetectionDataset(train_set, cfg.input_size, stride, augment, seed=cfg.seed + rank,
                               regress_radius=radius)
    sampler = DistributedSampler(dataset, world, rank, seed=cfg.seed) if world > 1 else None
    loader = DataLoader(dataset, cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                        drop_last=len(dataset) >= cfg.batch_size)
    if len(loader) == 0:
        raise ValueError(f"no training batches: {len(dataset)} training images")
    validator = (Validator(val_set, cfg.input_size, stride, labels, offset_range=radius)
                 if rank == 0 and len(val_set) else None)
    out = Path(cfg.run_dir)
    last_path, best_path, csv_path = out / "last.pt", out / "best.pt", out / "results.csv"

    def losses_of(outputs: list[dict], targets: dict) -> list:
        return [sum(centernet_loss(p, targets, radius, cfg.giou).values())
                + cfg.distill * heatmap_distillation(p, outputs[-1], targets) for p in outputs]

    construction: dict = {}
    if stepping and init is None and not (cfg.resume and last_path.exists()):
        construction = _construct(model, cfg, loader, losses_of, out, rank)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    update = SuppressedUpdate(model, optimizer, cfg.stepping_beta) if stepping else None
    steps_per_epoch = min(cfg.limit_batches or len(loader), len(loader))
    total, warmup = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    spec = input_spec(cfg.input_size)
    start_epoch, best = 0, -1.0
    if cfg.resume and last_path.exists():
        state = load_checkpoint(last_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best = state["epoch"], state.get("best_fitness", -1.0)
        construction = state.get("construction", {})
        if update is not None:
            update.refresh()
    elif rank == 0 and csv_path.exists():
        csv_path.unlink()  # a fresh run starts a fresh table
    net = DistributedDataParallel(model) if world > 1 else model
    out.mkdir(parents=True, exist_ok=True)
    for epoch in range(start_epoch, cfg.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        started = time.time()
        sums: list[float] = []
        bar = tqdm(loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=rank != 0)
        for step, (images, targets) in enumerate(bar):
            if step >= steps_per_epoch:
                break
            images = images.to(device)
            targets = {k: v.to(device) for k, v in targets.items()}
            outputs = net(images)
            stage_losses = losses_of(outputs, targets)
            if update is not None:  # SteppingNet: one suppressed step per stage
                update(stage_losses)
            else:
                optimizer.zero_grad(set_to_none=True)
                sum(stage_losses).backward()
                optimizer.step()
            scheduler.step()
            values = [v.item() for v in stage_losses]
            sums = [a + b for a, b in zip(sums, values)] if sums else values
            bar.set_postfix({f"L{k}": f"{v:.2f}" for k, v in enumerate(values)})
        if rank != 0:
            continue
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "time_s": round(time.time() - started, 1),
               **{f"loss_s{k}": round(s / steps_per_epoch, 5) for k, s in enumerate(sums)}}
        validate = validator is not None and ((epoch + 1) % max(1, cfg.val_every) == 0 or epoch + 1 == cfg.epochs)
        rows = validator(model) if validate else []
        for k in range(len(sums)):
            row[f"val_map50_s{k}"] = rows[k]["map50"] if rows else ""
            row[f"val_map_s{k}"] = rows[k]["map"] if rows else ""
        fitness = float(np.mean([r["map"] or 0.0 for r in rows])) if rows else None
        if rows:
            print(f"epoch {epoch + 1}: val mAP@0.5 " + " / ".join(f"{r['map50']:.3f}" for r in rows)
                  + ", mAP@0.5:0.95 " + " / ".join(f"{r['map']:.3f}" for r in rows))
        improved = fitness is not None and fitness > best
        best = fitness if improved else best
        _write_row(csv_path, row)
        extra = {"epoch": epoch + 1, "train_config": asdict(cfg), "best_fitness": best,
                 **({"construction": construction} if construction else {})}
        if improved or validator is None:  # no validation set: the last epoch is the best we know
            torch.save(make_checkpoint(model, family, labels, spec, **extra, val=rows), best_path)
        torch.save(make_checkpoint(model, family, labels, spec, **extra, optimizer=optimizer.state_dict(),
                                   scheduler=scheduler.state_dict()), last_path)
    if rank == 0 and csv_path.exists():
        plot_results(csv_path, out / "results.png")
    if world > 1:
        dist.destroy_process_group()
    return best_path
