"""CLI: measured CPU time of a few training steps per network, and the epoch and schedule it implies.

    python experiments/epoch_time.py --out docs/results/big_little_epoch_time.json

Each network (the little networks of ``nets.appeal.LITTLE_NETS``, CIFAR ResNets by depth) runs
``--steps`` SGD steps (forward, cross-entropy, backward, update; batch ``--batch-size`` of random
32x32 images: the time does not depend on the pixels) after ``--warmup`` untimed ones, at
``--threads`` torch threads. The networks take turns step by step so they share the machine's
load. Time is the process's CPU time (``time.process_time``: at one thread the compute itself,
not the wait for a core on a shared machine); the wall time is kept beside it. Reported: the
median CPU seconds per step, the epoch it implies on the 50,000 CIFAR-10 training images, and the
paper's 200-epoch schedule (AppealNet Appendix B.5) in hours, all on one core of this machine.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from anytime_perception.nets.appeal import LITTLE_NETS, build_little
from anytime_perception.nets.macs import counted_macs
from anytime_perception.nets.resnet_cifar import resnet_cifar

__all__ = ["main", "step_times"]

TRAIN_IMAGES = 50_000
PAPER_EPOCHS = 200


def _network(name: str) -> nn.Module:
    if name.startswith("resnet"):
        return resnet_cifar(int(name.removeprefix("resnet")))
    return build_little(name, 10)


def step_times(networks: dict[str, nn.Module], batch_size: int, steps: int,
               warmup: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """CPU and wall seconds of each timed SGD step per network, the networks interleaved step by step."""
    x = torch.randn(batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (batch_size,))
    optimizers = {k: torch.optim.SGD(n.parameters(), lr=0.01, momentum=0.9) for k, n in networks.items()}
    times: dict[str, list[float]] = {k: [] for k in networks}
    walls: dict[str, list[float]] = {k: [] for k in networks}
    for step in range(warmup + steps):
        for name, net in networks.items():
            net.train()
            start, wall = time.process_time(), time.perf_counter()
            loss = F.cross_entropy(net(x), y)
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()
            if step >= warmup:
                times[name].append(time.process_time() - start)
                walls[name].append(time.perf_counter() - wall)
    return times, walls


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python experiments/epoch_time.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--networks", nargs="+", default=["mobilenet", "mobilenet_w05_s2", "resnet20", "resnet56"],
                   help=f"little networks ({', '.join(LITTLE_NETS)}) or resnetDEPTH")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="JSON file to write (default: print only)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    try:
        networks = {name: _network(name) for name in args.networks}
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    times, walls = step_times(networks, args.batch_size, args.steps, args.warmup)
    steps_per_epoch = TRAIN_IMAGES // args.batch_size
    rows = {}
    for name, net in networks.items():
        median = statistics.median(times[name])
        macs = counted_macs(lambda: net.eval()(torch.zeros(1, 3, 32, 32)), net)
        rows[name] = {"macs": macs, "step_cpu_s": times[name], "step_wall_s": walls[name], "median_step_s": median,
                      "epoch_min": median * steps_per_epoch / 60,
                      "paper_schedule_h": median * steps_per_epoch * PAPER_EPOCHS / 3600}
        print(f"{name}: {macs / 1e6:.1f} M MACs, {median:.2f} CPU s/step, epoch ~{rows[name]['epoch_min']:.0f} min, "
              f"{PAPER_EPOCHS} epochs ~{rows[name]['paper_schedule_h']:.0f} h", flush=True)
    if args.out:
        result = {"networks": rows, "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
                  "threads": args.threads, "steps_per_epoch": steps_per_epoch,
                  "command": "python experiments/epoch_time.py " + " ".join(sys.argv[1:] if argv is None else argv)}
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
