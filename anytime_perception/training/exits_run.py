"""CLI: attach exits to a trained backbone and train them (the backbone stays frozen).

    python -m anytime_perception.training.exits_run pteenet --backbone runs/exits/cifar10_resnet20/backbone/last.pt \
        --data ../shared/datasets/cifar10/cifar10_jpg.zip --exits 3 --placement fine --lam 0.5 --out runs/exits/cifar10_resnet20/pteenet
    python -m anytime_perception.training.exits_run gates --loss hinge --backbone ... --data ... --exits 3 --out ...

``pteenet``: ConvX branches with confidence heads, PTEEnet's cumulative loss on the backbone's own
predictions (labels unused). ``gates``: single-layer decision gates on pooled features, hinge (or
``--loss ce``) on the dataset labels. Writes ``<out>/last.pt`` (backbone + heads, loadable with
``weights_only``) and ``<out>/result.json`` (per-exit accuracy, agreement with the backbone,
stage MACs, wall time, command).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..nets.early_exit import PLACEMENTS, EarlyExitNet, exit_points, stage_macs, unit_macs
from ..nets.macs import counted_macs
from .classification import batches, load_classification
from .classifier_run import load_resnet
from .cli import add_run_args, command_line, configure_torch, run_cli
from .early_exits import (branch_warmup_loss, cross_entropy_loss, cumulative_loss, exit_outputs, fit_heads,
                          gate_loss, hinge_loss)
from ..nets.checkpoint import classifier_checkpoint, load_checkpoint, model_from_state

__all__ = ["main", "load_exit_net", "exit_net_from_state"]


def exit_net_from_state(state: dict) -> tuple[EarlyExitNet, dict]:
    """The trained early-exit network and its metadata from a loaded ``exits_run`` checkpoint."""
    return model_from_state(state)


def load_exit_net(path: str | Path) -> tuple[EarlyExitNet, dict]:
    """An early-exit network from a checkpoint (``weights_only``: no unpickling)."""
    return exit_net_from_state(load_checkpoint(path))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m anytime_perception.training.exits_run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method", choices=("pteenet", "gates"))
    p.add_argument("--backbone", required=True, help="classifier_run checkpoint of the frozen backbone")
    p.add_argument("--data", required=True, help="the backbone's image-folder dataset")
    p.add_argument("--out", required=True)
    p.add_argument("--exits", type=int, default=3, help="number of early exits (besides the backbone's)")
    p.add_argument("--placement", choices=PLACEMENTS, default="fine", help="cost-distribution method")
    p.add_argument("--points", type=int, nargs="+", help="explicit unit indices instead of --placement")
    p.add_argument("--convs", type=int, default=1, help="conv blocks per ConvX branch")
    p.add_argument("--lam", type=float, default=0.5, help="PTEEnet cost weight lambda")
    p.add_argument("--loss", choices=("hinge", "ce"), default="hinge", help="decision-gate training loss")
    p.add_argument("--epochs", type=int, default=5, help="epochs of the exit loss (PTEEnet: the cumulative loss)")
    p.add_argument("--warmup-epochs", type=int, default=1,
                   help="pteenet: epochs of branch classifiers alone on the backbone's predictions first")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    add_run_args(p, resume=False)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad data or checkpoints end it with one ``error:`` line (exit 2)."""
    args = _parse(argv)
    return run_cli(lambda: _run(args, argv))


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    configure_torch(args.threads, args.seed)
    backbone, backbone_meta = load_resnet(args.backbone)
    data = load_classification(args.data, args.train_limit, args.test_limit, flip=not args.no_flip, seed=args.seed)
    if list(data.classes) != backbone_meta["classes"]:
        raise ValueError(f"{args.data}: classes differ from the backbone's")
    size = data.train_images.shape[-1]
    points = args.points or exit_points(unit_macs(backbone, size), args.exits, args.placement)
    kind = "branch" if args.method == "pteenet" else "gate"
    net = EarlyExitNet(backbone, points, kind, args.convs, size)
    macs = stage_macs(net, size)
    backbone_macs = counted_macs(lambda: backbone(torch.zeros(1, 3, size, size)), backbone)
    costs = torch.tensor(macs, dtype=torch.float32).cumsum(0) / backbone_macs
    loss = ((lambda outputs, _labels, c: cumulative_loss(outputs, c, args.lam)) if args.method == "pteenet"
            else gate_loss(hinge_loss if args.loss == "hinge" else cross_entropy_loss))
    epoch = len(data.train_labels) // args.batch_size
    stream = batches(data, args.batch_size, torch.Generator().manual_seed(args.seed))
    start = time.time()
    if args.method == "pteenet" and args.warmup_epochs:
        fit_heads(net, stream, args.warmup_epochs * epoch, branch_warmup_loss, costs, args.lr, desc="warm-up")
    losses = fit_heads(net, stream, args.epochs * epoch, loss, costs, args.lr, desc=args.method)
    wall = time.time() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {**backbone_meta, "kind": kind, "method": args.method, "points": points, "convs": args.convs,
            "input_size": size, "lam": args.lam, "loss": args.loss, "placement": None if args.points else args.placement,
            "stage_macs": macs, "backbone_macs": backbone_macs}
    torch.save(classifier_checkpoint(net.state_dict(), meta), out / "last.pt")
    logits, _ = exit_outputs(net, data.test_images)
    predictions = logits.argmax(2)
    result = {"method": args.method, "points": points, "stage_macs": macs, "backbone_macs": backbone_macs,
              "cost_fraction": costs.tolist(),
              "exit_accuracy": (predictions == data.test_labels).float().mean(1).tolist(),
              "agreement_with_backbone": (predictions == predictions[-1]).float().mean(1).tolist(),
              "final_loss": sum(losses[-50:]) / max(len(losses[-50:]), 1), "wall_s": wall, "epochs": args.epochs,
              "warmup_epochs": args.warmup_epochs if args.method == "pteenet" else 0,
              "lam": args.lam, "loss": args.loss, "placement": meta["placement"],
              "command": command_line("anytime_perception.training.exits_run", argv)}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("points", "cost_fraction", "exit_accuracy", "wall_s")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
