"""CLI: AppealNet, a little network (MobileNet / ShuffleNet) that appeals hard inputs to a big ResNet.

    python -m anytime_perception.training.appeal_run little --data ../shared/datasets/cifar10/cifar10_jpg.zip \\
        --arch mobilenet --epochs 15 --out runs/big_little/cifar10/mobilenet/little
    python -m anytime_perception.training.appeal_run joint --data ../shared/datasets/cifar10/cifar10_jpg.zip \\
        --little runs/big_little/cifar10/mobilenet/little/last.pt --big runs/big_little/cifar10/resnet56/last.pt \\
        --epochs 5 --out runs/big_little/cifar10/mobilenet/white
    python -m anytime_perception.training.appeal_run joint ... --black-box --out runs/big_little/cifar10/mobilenet/black

``little`` pre-trains the little network alone with cross-entropy (it is also the MSP / gap /
entropy baseline). ``--arch`` names it (``nets.appeal.LITTLE_NETS``): the default ``mobilenet`` is
the paper's CIFAR-10 network (full width, stride-1 stem), ``mobilenet_w05`` the paper's GTSRB one
(width 0.5), ``mobilenet_w05_s2`` / ``shufflenet_s2`` ours (width 0.5, stride-2 stem: the networks
of our published rows). ``joint`` adds the predictor head q(x) (``--predictor-head``: the paper's
single fully connected layer ``linear``, the default, or our ``mlp``) to the pre-trained little
network and trains all of it with AppealNet's joint loss (``training/appeal.py``): white-box
against the frozen big network (``--big``, a ``classifier_run`` checkpoint) or black-box
(``--black-box``: the big network is an oracle). SGD (momentum 0.9, Nesterov), cosine learning
rate, 4-pixel-shift crops and flips (``little --no-flip`` for traffic signs; ``joint`` augments
like its little network). Checkpoints every epoch to ``<out>/last.pt`` (``--resume`` continues)
and ends with ``<out>/result.json`` (test accuracy, MACs, the options used, per-epoch log, wall
time, command).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..nets.appeal import LITTLE_LAYOUT, LITTLE_NETS, PREDICTOR_HEADS, AppealNet, build_little, little_arch
from ..nets.macs import counted_macs
from .appeal import LagrangeMultiplier, Renormalise, StepLoss, appeal_outputs, fit_steps, joint_step, little_step
from .classification import ClassificationData, batches, load_classification
from .classifier_run import predict, resnet_from_state
from .cli import add_run_args, command_line, configure_torch, run_cli
from ..nets.checkpoint import classifier_checkpoint, load_checkpoint, model_from_state

__all__ = ["main", "little_from_state", "appeal_from_state", "checkpoint_of"]

MODULE = "anytime_perception.training.appeal_run"


def checkpoint_of(path: str | Path, kinds: tuple[str, ...]) -> dict:
    """A loaded checkpoint (``weights_only``) whose ``meta.kind`` is one of ``kinds``."""
    state = load_checkpoint(path)
    kind = state.get("meta", {}).get("kind") if isinstance(state, dict) else None
    if kind not in kinds:
        raise ValueError(f"{path}: a {kind or 'non-training'} checkpoint; expected {' or '.join(kinds)}")
    return state


def little_from_state(state: dict) -> tuple[nn.Module, dict]:
    """The pre-trained little network and its metadata from a loaded ``little`` checkpoint."""
    return model_from_state(state)


def appeal_from_state(state: dict) -> tuple[AppealNet, dict]:
    """The trained AppealNet and its metadata from a loaded ``joint`` checkpoint."""
    return model_from_state(state)


@dataclass
class _Job:
    """What one subcommand trains, and how it is scored at the end."""

    model: nn.Module
    step: StepLoss
    data: ClassificationData
    meta: dict
    evaluate: Callable[[], dict]
    stateful: dict[str, Any]  # further objects with state_dict/load_state_dict kept in the checkpoint


def _parse(argv: list[str] | None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", required=True, help="image-folder zip or directory with train/ and test/")
    common.add_argument("--out", required=True)
    common.add_argument("--epochs", type=int, help="default: little 15, joint 5")
    common.add_argument("--batch-size", type=int, default=128)
    common.add_argument("--lr", type=float, help="initial learning rate (default: little 0.1, joint 0.01)")
    common.add_argument("--weight-decay", type=float, default=5e-4)
    add_run_args(common, flip=False)
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    little = sub.add_parser("little", parents=[common], help="pre-train the little network alone (cross-entropy)")
    little.add_argument("--arch", choices=sorted(LITTLE_NETS), default="mobilenet",
                        help="little network (default: the paper's CIFAR-10 MobileNet; GTSRB: mobilenet_w05; "
                             "ours: mobilenet_w05_s2, shufflenet_s2)")
    little.add_argument("--no-flip", action="store_true", help="no horizontal flips (traffic signs)")
    little.set_defaults(epochs=15, lr=0.1)
    joint = sub.add_parser("joint", parents=[common], help="AppealNet joint training from a pre-trained little network")
    joint.add_argument("--little", required=True, help="checkpoint of `little`")
    mode = joint.add_mutually_exclusive_group(required=True)
    mode.add_argument("--big", help="white-box: classifier_run checkpoint of the big network")
    mode.add_argument("--black-box", action="store_true", help="the big network is an oracle (its loss is 0)")
    joint.add_argument("--predictor-head", choices=PREDICTOR_HEADS, default="linear",
                       help="q(x) head: linear (the paper's single FC layer) or mlp (ours: two FC layers)")
    joint.add_argument("--target", type=float, default=0.5, help="target of the predictor loss mean(-log q)")
    joint.add_argument("--beta", type=float, default=0.1, help="initial Lagrange multiplier of the predictor loss")
    joint.add_argument("--beta-up", type=float, default=0.99, help="beta /= this after a step at or above the target")
    joint.add_argument("--beta-down", type=float, default=1.01, help="beta /= this after a step below it")
    joint.set_defaults(epochs=5, lr=0.01)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad data, flags or checkpoints end it with one ``error:`` line (exit 2)."""
    args = _parse(argv)
    return run_cli(lambda: _run(args, argv))


def _check(args: argparse.Namespace) -> None:
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        raise ValueError("--epochs and --batch-size must be >= 1 and --lr > 0")
    if args.command == "joint" and not (args.target > 0 and args.beta > 0 and 0 < args.beta_up < 1 < args.beta_down):
        raise ValueError("need --target > 0, --beta > 0 and 0 < --beta-up < 1 < --beta-down")


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    _check(args)
    configure_torch(args.threads, args.seed)
    job = _little_job(args) if args.command == "little" else _joint_job(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log, wall = _train(args, job, out / "last.pt")
    result = {"method": job.meta.get("method", "little"), "arch": job.meta["arch"],
              **({"predictor_head": job.meta["predictor_head"]} if "predictor_head" in job.meta else {}),
              "data": str(args.data),
              **job.evaluate(), "epochs": args.epochs, "log": log, "wall_s": wall,
              "command": command_line(MODULE, argv)}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "log"}))
    return 0


def _macs(model: nn.Module, size: int) -> int:
    return counted_macs(lambda: model.eval()(torch.zeros(1, 3, size, size)), model)


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def _little_job(args: argparse.Namespace) -> _Job:
    data = load_classification(args.data, args.train_limit, args.test_limit, flip=not args.no_flip, seed=args.seed)
    model = build_little(args.arch, len(data.classes))
    size = data.train_images.shape[-1]
    meta = {"kind": "little", "arch": args.arch, "little_layout": LITTLE_LAYOUT, "classes": list(data.classes),
            "mean": list(data.mean), "std": list(data.std), "flip": data.flip, "input_size": size,
            "macs": _macs(model, size)}
    return _Job(model, little_step(model), data, meta,
                lambda: {"test_accuracy": _accuracy(predict(model, data.test_images), data.test_labels),
                         "macs": meta["macs"]}, {})


def _in_statistics(data: ClassificationData, mean: list[float], std: list[float]) -> ClassificationData:
    """``data`` re-normalised in place to ``mean``/``std`` (those the little network was trained with)."""
    to = Renormalise(data.mean, data.std, mean, std)
    for images in (data.train_images, data.test_images):
        images.mul_(to.scale).add_(to.shift)
    return replace(data, mean=tuple(mean), std=tuple(std))


def _joint_job(args: argparse.Namespace) -> _Job:
    little, little_meta = little_from_state(checkpoint_of(args.little, ("little",)))
    data = load_classification(args.data, args.train_limit, args.test_limit, flip=little_meta["flip"], seed=args.seed)
    if list(data.classes) != little_meta["classes"]:
        raise ValueError(f"{args.data}: classes differ from the little network's ({args.little})")
    data = _in_statistics(data, little_meta["mean"], little_meta["std"])
    net = AppealNet(little, args.predictor_head)
    size = data.train_images.shape[-1]
    big, big_macs = None, None
    if args.big:
        resnet, big_meta = resnet_from_state(checkpoint_of(args.big, ("resnet_cifar",)))
        if big_meta["classes"] != little_meta["classes"]:
            raise ValueError(f"{args.big}: classes differ from the little network's ({args.little})")
        big_macs = _macs(resnet, size)
        big = nn.Sequential(Renormalise(little_meta["mean"], little_meta["std"], big_meta["mean"], big_meta["std"]),
                            resnet).eval().requires_grad_(False)
    multiplier = LagrangeMultiplier(args.beta, args.target, args.beta_up, args.beta_down)
    meta = {**{k: little_meta[k] for k in ("classes", "mean", "std", "flip", "input_size")}, "kind": "appeal",
            "arch": little_arch(little_meta), "little_layout": LITTLE_LAYOUT,
            "method": "black-box" if args.black_box else "white-box", "macs": _macs(net, size),
            "little": str(args.little), "big": args.big, "big_macs": big_macs, "target": args.target,
            "predictor_head": args.predictor_head}

    def evaluate() -> dict:
        logits, q = appeal_outputs(net, data.test_images)
        scores = {"test_accuracy": _accuracy(logits, data.test_labels), "mean_q": float(q.mean()),
                  "test_predictor_loss": float(-q.clamp_min(1e-12).log().mean()), "beta": multiplier.beta,
                  "macs": meta["macs"], "big_macs": big_macs}
        if big is not None:
            scores["big_test_accuracy"] = _accuracy(predict(big, data.test_images), data.test_labels)
        return scores

    return _Job(net, joint_step(net, multiplier, big), data, meta, evaluate, {"multiplier": multiplier})


def _train(args: argparse.Namespace, job: _Job, path: Path) -> tuple[list[dict], float]:
    """Train ``job.model`` epoch by epoch with a checkpoint after each; returns the per-epoch
    means of the logged numbers and the training wall time."""
    optimizer = torch.optim.SGD(job.model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay,
                                nesterov=True)
    steps_per_epoch = len(job.data.train_labels) // args.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(job.data.train_labels)} training images are fewer than one batch ({args.batch_size})")
    total = args.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                 lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    state = checkpoint_of(path, (job.meta["kind"],)) if args.resume and path.exists() else {}
    epoch, wall, log = int(state.get("epoch", 0)), float(state.get("wall_s", 0.0)), list(state.get("log", []))
    if state:
        saved = state.get("meta", {})
        if "arch" in saved and little_arch(saved) != job.meta["arch"]:
            raise ValueError(f"--resume: {path} holds a {little_arch(saved)} little network, not {job.meta['arch']} "
                             "(a run of another network; give another --out)")
        job.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        for name, obj in job.stateful.items():
            obj.load_state_dict(state[name])
    stream = batches(job.data, args.batch_size, torch.Generator().manual_seed(args.seed + epoch))
    while epoch < args.epochs:
        start = time.time()
        history = fit_steps(job.model, stream, steps_per_epoch, job.step, optimizer, schedule,
                            f"{args.command} epoch {epoch + 1}/{args.epochs}")
        epoch, wall = epoch + 1, wall + time.time() - start
        log.append({"epoch": epoch, **{k: sum(h[k] for h in history) / len(history) for k in history[0]}})
        torch.save(classifier_checkpoint(job.model.state_dict(), job.meta, optimizer=optimizer.state_dict(),
                                         schedule=schedule.state_dict(), epoch=epoch, wall_s=wall, log=log,
                                         **{name: obj.state_dict() for name, obj in job.stateful.items()}), path)
        print(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in log[-1].items() if k != "epoch")
              + f", {wall / 60:.1f} min", flush=True)
    return log, wall


if __name__ == "__main__":
    raise SystemExit(main())
