"""CLI: train the original network, a SteppingNet, or a nested baseline on an image-folder set.

    python -m anytime_perception.training.stepping_run original  --data cifar10_jpg.zip --arch lenet_3c1l --out runs/c10_3c1l/original
    python -m anytime_perception.training.stepping_run stepping  --data ... --arch lenet_3c1l --teacher runs/c10_3c1l/original/last.pt --out ...
    python -m anytime_perception.training.stepping_run anywidth  --data ... --teacher ... --epochs N --out ...
    python -m anytime_perception.training.stepping_run slimmable --data ... --teacher ... --epochs N --out ...

Every run checkpoints to ``<out>/last.pt`` (``--resume`` continues it) and ends by writing
``<out>/result.json``: test accuracy and MACs of every subnet, wall time, the settings and the
command. MAC targets are fractions of the original (unexpanded) network's MACs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch
from torch import nn

from ..nets.slimmable import SlimmableClassifier, fit_ratios
from ..nets.stepping import ARCHITECTURES, ClassifierSpec, ConvSpec, SteppingClassifier
from .classification import ClassificationData, batches, evaluate, load_classification
from .stepping import SteppingConfig, assign_regular_levels, construct, fit, make_optimizer
from .train import load_checkpoint

__all__ = ["main", "load_classifier"]

DEFAULT_TARGETS = {"lenet_3c1l": (0.10, 0.30, 0.50, 0.85), "lenet5": (0.15, 0.30, 0.60, 0.85)}
DEFAULT_EXPANSION = {"lenet_3c1l": 1.8, "lenet5": 2.0}


def _spec_from_dict(d: dict) -> ClassifierSpec:
    return ClassifierSpec(d["name"], tuple(ConvSpec(**c) for c in d["convs"]), tuple(d["hidden"]),
                          d["num_classes"], d["input_size"])


def _build(meta: dict) -> nn.Module:
    spec = _spec_from_dict(meta["spec"])
    if meta["kind"] == "slimmable":
        return SlimmableClassifier(spec, tuple(meta["ratios"]))
    return SteppingClassifier(spec, meta["num_subnets"])


def load_classifier(path: str | Path) -> tuple[nn.Module, dict]:
    """A trained classifier and its metadata from a checkpoint (``weights_only``: no unpickling)."""
    state = load_checkpoint(path)
    model = _build(state["meta"])
    model.load_state_dict(state["model"])
    return model.eval(), state["meta"]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m anytime_perception.training.stepping_run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method", choices=("original", "stepping", "anywidth", "slimmable"))
    p.add_argument("--data", required=True, help="image-folder zip or directory (train/ and test/)")
    p.add_argument("--arch", default="lenet_3c1l", choices=sorted(ARCHITECTURES))
    p.add_argument("--out", required=True)
    p.add_argument("--teacher", help="checkpoint of the original network (KD teacher, MAC reference)")
    p.add_argument("--targets", type=float, nargs="+", help="MAC targets as fractions of the original network")
    p.add_argument("--expansion", type=float, help="width ratio of the expanded network (stepping, anywidth)")
    p.add_argument("--epochs", type=int, default=30, help="original/baselines: epochs; stepping: retraining epochs")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--no-kd", action="store_true", help="retrain with CE only (ablation)")
    p.add_argument("--no-suppression", action="store_true", help="beta = 1 (ablation)")
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips (traffic signs)")
    p.add_argument("--train-limit", type=int, default=0, help="use a subset of the training set")
    p.add_argument("--test-limit", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    for f in fields(SteppingConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    return p.parse_args(argv)


class _Run:
    """Checkpointing and bookkeeping of one run."""

    def __init__(self, args: argparse.Namespace, meta: dict, model: nn.Module) -> None:
        self.args, self.meta, self.model = args, meta, model
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = self.out / "last.pt"
        self.state = load_checkpoint(self.path) if args.resume and self.path.exists() else {}
        if self.state:
            model.load_state_dict(self.state["model"])

    def progress(self, key: str) -> int:
        return int(self.state.get(key, 0))

    def optimizer(self, cfg: SteppingConfig, key: str) -> torch.optim.Optimizer:
        """A fresh optimizer, or the checkpointed one if the run stopped inside phase ``key``."""
        optimizer = make_optimizer(self.model, cfg)
        if self.state.get("optimizer_phase") == key:
            optimizer.load_state_dict(self.state["optimizer"])
        return optimizer

    def save(self, key: str, value: int, optimizer: torch.optim.Optimizer) -> None:
        self.state.update({key: value, "optimizer": optimizer.state_dict(), "optimizer_phase": key})
        torch.save({**self.state, "model": self.model.state_dict(), "meta": self.meta}, self.path)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = SteppingConfig(**{f.name: getattr(args, f.name) for f in fields(SteppingConfig)})
    data: ClassificationData = load_classification(args.data, args.train_limit, args.test_limit,
                                                   flip=not args.no_flip, seed=args.seed)
    spec = ARCHITECTURES[args.arch].with_classes(len(data.classes))
    teacher, teacher_meta = (load_classifier(args.teacher) if args.teacher else (None, None))
    if args.method != "original" and teacher is None:
        sys.exit("--teacher (the trained original network) is required: it sets the MAC reference and is the KD teacher")
    original_macs = SteppingClassifier(spec, 1).macs(0)
    fractions = args.targets or DEFAULT_TARGETS[args.arch]
    targets = [round(f * original_macs) for f in fractions]
    expansion = args.expansion or DEFAULT_EXPANSION[args.arch]
    meta = {"kind": "slimmable" if args.method == "slimmable" else "stepping", "method": args.method,
            "classes": list(data.classes), "mean": list(data.mean), "std": list(data.std), "targets": targets}
    if args.method == "original":
        model = SteppingClassifier(spec, 1)
    elif args.method == "slimmable":
        meta["ratios"] = list(fit_ratios(spec, targets))
        model = SlimmableClassifier(spec, tuple(meta["ratios"]))
    else:
        spec = spec.expanded(expansion)
        model = SteppingClassifier(spec, len(targets))
        if args.method == "anywidth":
            assign_regular_levels(model, targets)
    meta["spec"] = asdict(spec)
    meta["num_subnets"] = getattr(model, "num_subnets", 1)
    run = _Run(args, meta, model)
    generator = torch.Generator().manual_seed(args.seed)
    stream = batches(data, args.batch_size, generator)
    steps_per_epoch = len(data.train_labels) // args.batch_size
    wall: dict[str, float] = dict(run.state.get("wall", {}))
    kd_teacher = None if args.no_kd else teacher
    beta = 1.0 if args.no_suppression else cfg.beta

    def timed(phase: str, job) -> None:
        start = time.time()
        job()
        wall[phase] = wall.get(phase, 0.0) + time.time() - start
        run.state["wall"] = wall

    if args.method == "stepping":
        def build() -> None:
            construct(model, stream, targets, cfg, run.progress("iteration"), run.optimizer(cfg, "iteration"),
                      on_iteration=lambda it, o: run.save("iteration", it, o))
        if run.progress("iteration") < cfg.iterations or "construct" not in wall:
            timed("construct", build)
    steps = args.epochs * steps_per_epoch
    if run.progress("step") < steps:
        def train() -> None:
            fit(model, stream, steps, cfg, kd_teacher if args.method != "original" else None, beta,
                run.progress("step"), run.optimizer(cfg, "step"), lambda s, o: run.save("step", s, o), steps_per_epoch,
                desc="retrain" if args.method == "stepping" else args.method)
        timed("train", train)
    accuracy = evaluate(model, data.test_images, data.test_labels)
    macs = [model.macs(i) for i in range(meta["num_subnets"])]
    result = {
        "method": args.method, "arch": args.arch, "data": str(args.data),
        "subnet_accuracy": accuracy, "subnet_macs": macs, "original_macs": original_macs,
        "macs_fraction": [m / original_macs for m in macs], "targets": targets,
        "teacher_accuracy": evaluate(teacher, data.test_images, data.test_labels)[0] if teacher else None,
        "wall_s": wall, "epochs": args.epochs, "batch_size": args.batch_size, "kd": kd_teacher is not None,
        "beta": beta, "expansion": expansion if args.method in ("stepping", "anywidth") else None,
        "config": asdict(cfg), "train_images": len(data.train_labels), "test_images": len(data.test_labels),
        "command": "python -m anytime_perception.training.stepping_run " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    (run.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("method", "subnet_accuracy", "macs_fraction", "wall_s")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
