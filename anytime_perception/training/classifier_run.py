"""CLI: train a CIFAR ResNet classifier (the frozen backbone of early exits, the big network).

    python -m anytime_perception.training.classifier_run --data ../shared/datasets/cifar10/cifar10_jpg.zip \
        --depth 20 --epochs 30 --out runs/exits/cifar10_resnet20/backbone

SGD (momentum 0.9, Nesterov, weight decay 5e-4), cosine learning rate, 4-pixel-shift crops and
flips (``--no-flip`` for traffic signs). Checkpoints every epoch to ``<out>/last.pt``
(``--resume`` continues) and ends with ``<out>/result.json`` (test accuracy, wall time, command).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch.nn import functional as F
from tqdm import tqdm

from ..nets.macs import counted_macs
from ..nets.resnet_cifar import CifarResNet, resnet_cifar
from .classification import batches, load_classification
from .cli import add_run_args, command_line, configure_torch, run_cli
from ..nets.checkpoint import classifier_checkpoint, load_checkpoint, model_from_state

__all__ = ["main", "load_resnet", "resnet_from_state", "predict"]


def resnet_from_state(state: dict) -> tuple[CifarResNet, dict]:
    """The trained ResNet and its metadata (classes, normalisation) from a loaded checkpoint."""
    return model_from_state(state)


def load_resnet(path: str | Path) -> tuple[CifarResNet, dict]:
    """A trained ResNet and its metadata (classes, normalisation) from a ``classifier_run`` checkpoint."""
    return resnet_from_state(load_checkpoint(path))


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Logits of ``model`` (eval mode) for all ``images``."""
    model.eval()
    return torch.cat([model(images[i: i + batch_size]) for i in range(0, len(images), batch_size)])


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m anytime_perception.training.classifier_run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="image-folder zip or directory with train/ and test/")
    p.add_argument("--depth", type=int, default=20, help="ResNet depth 6n+2 (20, 32, 56, 110)")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    add_run_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad data or checkpoints end it with one ``error:`` line (exit 2)."""
    args = _parse(argv)
    return run_cli(lambda: _run(args, argv))


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    configure_torch(args.threads, args.seed)
    data = load_classification(args.data, args.train_limit, args.test_limit, flip=not args.no_flip, seed=args.seed)
    model = resnet_cifar(args.depth, len(data.classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay,
                                nesterov=True)
    steps_per_epoch = len(data.train_labels) // args.batch_size
    total = args.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "last.pt"
    meta = {"kind": "resnet_cifar", "depth": args.depth, "classes": list(data.classes), "mean": list(data.mean),
            "std": list(data.std)}
    state = load_checkpoint(path) if args.resume and path.exists() else {}
    epoch, wall = int(state.get("epoch", 0)), float(state.get("wall_s", 0.0))
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
    generator = torch.Generator().manual_seed(args.seed + epoch)
    stream = batches(data, args.batch_size, generator)
    while epoch < args.epochs:
        start = time.time()
        model.train()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", leave=False)
        for _ in bar:
            images, labels = next(stream)
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        epoch, wall = epoch + 1, wall + time.time() - start
        torch.save(classifier_checkpoint(model.state_dict(), meta, optimizer=optimizer.state_dict(),
                                         schedule=schedule.state_dict(), epoch=epoch, wall_s=wall), path)
        print(f"epoch {epoch}: loss {loss.item():.3f}, {wall / 60:.1f} min", flush=True)
    accuracy = float((predict(model, data.test_images).argmax(1) == data.test_labels).float().mean())
    size = data.test_images.shape[-1]
    macs = counted_macs(lambda: model.eval()(torch.zeros(1, 3, size, size)), model)
    result = {"depth": args.depth, "data": str(args.data), "test_accuracy": accuracy, "macs": macs,
              "epochs": args.epochs, "wall_s": wall,
              "command": command_line("anytime_perception.training.classifier_run", argv)}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
