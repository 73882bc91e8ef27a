"""CLI: attach exits to a trained backbone and train them (the backbone stays frozen).

    python -m anytime_perception.training.exits_run pteenet \
        --backbone runs/exits/cifar10_resnet20/backbone/last.pt --data ../shared/datasets/cifar10/cifar10_jpg.zip \
        --exits 3 --placement fine --lam 0.5 --out runs/exits/cifar10_resnet20/pteenet
    python -m anytime_perception.training.exits_run gates --backbone ... --data ... --out ...

``pteenet``: ConvX branches with confidence heads, PTEEnet's cumulative loss on the backbone's own
predictions (labels unused). ``gates``: single-layer decision gates on pooled features, hinge (or
``--loss ce``) on the dataset labels. Defaults are each paper's formulation; our variants are
named options (every run records them under ``options`` in ``result.json`` and the checkpoint):

  method   option            paper (default)                     ours
  pteenet  --placement       fine                                pareto / golden / linear
  pteenet  --cost-form       next (eq. 3 as printed: c_{n+1})    recursive (EEnet: C_{n+1})
  pteenet  --warmup-epochs   0 (no warm-up)                      N epochs of branch classifiers first
  gates    --placement       main_blocks (after ResNet stages)   fine / pareto / golden / linear (units by cost)
  gates    --gate-score      raw (max_c w_c^T x + b_c, Alg. 1)   normalised (divided by ||w_c||)
  gates    --gate-penalty    norm (+ lambda ||w||, --gate-lambda) weight_decay (SGD weight decay, no norm term)

PTEEnet's single threshold T for every exit (vs per-exit thresholds) is chosen at calibration
(``calibration.calibrate``, ``experiments/exits_report.py``), not here. Writes ``<out>/last.pt``
(backbone + heads, loadable with ``weights_only``) and ``<out>/result.json`` (per-exit accuracy,
agreement with the backbone, stage MACs, wall time, options, command).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..nets.early_exit import GATE_SCORES, MAIN_BLOCKS, PLACEMENTS, EarlyExitNet, placement_points, stage_macs
from ..nets.macs import counted_macs
from .classification import batches, load_classification
from .classifier_run import load_resnet
from .cli import add_run_args, command_line, configure_torch, run_cli
from .early_exits import (COST_FORMS, GATE_PENALTIES, branch_warmup_loss, cross_entropy_loss, cumulative_loss,
                          exit_outputs, fit_heads, gate_loss, hinge_loss)
from ..nets.checkpoint import classifier_checkpoint, load_checkpoint, model_from_state

__all__ = ["main", "load_exit_net", "exit_net_from_state", "DEFAULT_PLACEMENT", "run_options"]

DEFAULT_PLACEMENT = {"pteenet": "fine", "gates": MAIN_BLOCKS}  # PTEEnet Sec. IV-A; d-gates Sec. 2.3
DEFAULT_WEIGHT_DECAY = 5e-4  # SGD weight decay of the heads, unless gates use the paper's norm term


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
    p.add_argument("--exits", type=int, help="number of early exits besides the backbone's (cost placements: "
                   "default 3; main_blocks: fixed by the backbone)")
    p.add_argument("--placement", choices=(*PLACEMENTS, MAIN_BLOCKS),
                   help="main_blocks (after each ResNet stage but the last) or a cost-distribution method; "
                   "default: pteenet fine, gates main_blocks (each paper's)")
    p.add_argument("--points", type=int, nargs="+", help="explicit unit indices instead of --placement")
    p.add_argument("--convs", type=int, default=1, help="conv blocks per ConvX branch")
    p.add_argument("--lam", type=float, default=0.5, help="PTEEnet cost weight lambda")
    p.add_argument("--cost-form", choices=COST_FORMS, default="next",
                   help="pteenet cost C_n: next (eq. 3 as printed, default) or recursive (EEnet's, ours)")
    p.add_argument("--loss", choices=("hinge", "ce"), default="hinge", help="decision-gate training loss")
    p.add_argument("--gate-score", choices=GATE_SCORES, default="raw",
                   help="gates' confidence: raw max_c f_c (Algorithm 1, default) or normalised by ||w_c|| (ours)")
    p.add_argument("--gate-penalty", choices=GATE_PENALTIES, default="norm",
                   help="gates: norm (the paper's + lambda ||w||, no weight decay; default) or weight_decay (ours)")
    p.add_argument("--gate-lambda", type=float, default=1e-3,
                   help="gates: lambda of the ||w|| term (the paper gives no value; ours)")
    p.add_argument("--weight-decay", type=float,
                   help=f"SGD weight decay of the heads (default {DEFAULT_WEIGHT_DECAY}; "
                   "0 for gates with --gate-penalty norm)")
    p.add_argument("--epochs", type=int, default=5, help="epochs of the exit loss (PTEEnet: the cumulative loss)")
    p.add_argument("--warmup-epochs", type=int, default=0,
                   help="pteenet: epochs of branch classifiers alone on the backbone's predictions first "
                   "(ours, not in the paper; default 0)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    add_run_args(p, resume=False)
    args = p.parse_args(argv)
    if args.points and (args.placement or args.exits):
        p.error("--points replaces --placement and --exits")
    args.placement = None if args.points else args.placement or DEFAULT_PLACEMENT[args.method]
    if args.weight_decay is None:
        args.weight_decay = 0.0 if args.method == "gates" and args.gate_penalty == "norm" else DEFAULT_WEIGHT_DECAY
    return args


def run_options(args: argparse.Namespace) -> dict:
    """The options that distinguish a run from its paper's formulation (recorded with every run)."""
    common = {"placement": args.placement, "points": args.points, "weight_decay": args.weight_decay}
    if args.method == "pteenet":
        return {**common, "lam": args.lam, "cost_form": args.cost_form, "warmup_epochs": args.warmup_epochs,
                "convs": args.convs}
    return {**common, "loss": args.loss, "gate_score": args.gate_score, "gate_penalty": args.gate_penalty,
            "gate_lambda": args.gate_lambda if args.gate_penalty == "norm" else 0.0}


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
    points = args.points or placement_points(backbone, args.placement, args.exits, size)
    kind = "branch" if args.method == "pteenet" else "gate"
    net = EarlyExitNet(backbone, points, kind, args.convs, size, args.gate_score)
    macs = stage_macs(net, size)
    backbone_macs = counted_macs(lambda: backbone(torch.zeros(1, 3, size, size)), backbone)
    costs = torch.tensor(macs, dtype=torch.float32).cumsum(0) / backbone_macs
    if args.method == "pteenet":
        def loss(outputs, _labels, c):
            return cumulative_loss(outputs, c, args.lam, args.cost_form)
    else:
        weights = [head.linear.weight for head in net.heads] if args.gate_penalty == "norm" else []
        loss = gate_loss(hinge_loss if args.loss == "hinge" else cross_entropy_loss, weights, args.gate_lambda)
    epoch = len(data.train_labels) // args.batch_size
    stream = batches(data, args.batch_size, torch.Generator().manual_seed(args.seed))
    start = time.time()
    if args.method == "pteenet" and args.warmup_epochs:
        fit_heads(net, stream, args.warmup_epochs * epoch, branch_warmup_loss, costs, args.lr, args.weight_decay,
                  desc="warm-up")
    losses = fit_heads(net, stream, args.epochs * epoch, loss, costs, args.lr, args.weight_decay, desc=args.method)
    wall = time.time() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    options = run_options(args)
    meta = {**backbone_meta, "kind": kind, "method": args.method, "points": points, "convs": args.convs,
            "input_size": size, "lam": args.lam, "loss": args.loss, "placement": args.placement,
            "gate_score": args.gate_score if kind == "gate" else None, "options": options,
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
              "lam": args.lam, "loss": args.loss, "placement": meta["placement"], "options": options,
              "command": command_line("anytime_perception.training.exits_run", argv)}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("points", "cost_fraction", "exit_accuracy", "wall_s")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
