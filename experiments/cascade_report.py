"""CLI: network selection over a cascade of trained classifiers (Bolukbasi et al., 2017).

    python experiments/cascade_report.py --data ../shared/datasets/cifar10/cifar10_jpg.zip \\
        --networks runs/big_little/cifar10/little_<name>/last.pt runs/exits/cifar10_resnet20/backbone/last.pt \\
                   runs/big_little/cifar10/resnet56/last.pt --out docs/results

Networks are given by rising cost (little, middle, big). Policies (one cost weight lambda per
point) and the single max-softmax threshold of the myopic baseline are learned on the calibration
half of the test split, every number is measured on the other half. The operating point at
``--max-loss`` is chosen on the calibration half (the cheapest setting within the loss there).
Adds the dataset to ``<out>/cascade.json`` (other datasets kept) and writes, for all of them,
``<out>/cascade_tables.md`` and ``<out>/cascade_<dataset>.png`` (accuracy vs mean MACs).
"""
from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from anytime_perception.calibration.cascade import learn_cascade, path_outcome, soft_oracle  # noqa: E402
from anytime_perception.data.image_folder import load_image_folder  # noqa: E402
from cascade_analysis import learned_curve, load_network, myopic_curve, operating, point_of, records_on  # noqa: E402
from exit_analysis import Point, macs_at_accuracy  # noqa: E402
from anytime_perception.eval.plots import save_plot  # noqa: E402

__all__ = ["main"]

LOSSES = (0.0, 0.005, 0.01, 0.02)  # accuracy losses of the speed-up table
POLICIES = {"learned": "learned policy (Bolukbasi)", "myopic": "myopic MSP threshold"}


def _analyse(args: argparse.Namespace) -> dict:
    """Every curve and point of one dataset."""
    test = load_image_folder(args.data, "test")
    if args.test_limit:
        test = test.subset(args.test_limit, args.seed)
    names = args.names or [Path(c).parent.name for c in args.networks]
    networks = [load_network(c, n, test.images.shape[1]) for c, n in zip(args.networks, names)]
    calibration, evaluation = (records_on(networks, h) for h in tqdm(test.halves(args.seed), desc="halves"))
    curves = {"learned": learned_curve(calibration, evaluation), "myopic": myopic_curve(calibration, evaluation)}
    base = float(calibration.correct[-1].mean())
    chosen = {k: operating(c, base, args.max_loss) for k, c in curves.items()}
    oracle = soft_oracle(evaluation)
    return {
        "networks": [{"name": n.name, "checkpoint": n.checkpoint, "kind": n.kind, "macs": n.macs,
                      "accuracy": float(evaluation.correct[i].mean()),
                      "calibration_accuracy": float(calibration.correct[i].mean())} for i, n in enumerate(networks)],
        "singles": [asdict(point_of(0.0, path_outcome(evaluation, (i,)), evaluation)) for i in range(len(networks))],
        "oracle": {**asdict(point_of(0.0, oracle, evaluation)), "path_share": oracle.path_share},
        "curves": {k: [asdict(s) for s in c] for k, c in curves.items()},
        "operating": {k: None if s is None else asdict(s) for k, s in chosen.items()},
        "policy": (None if chosen["learned"] is None
                   else learn_cascade(calibration, chosen["learned"].setting).to_dict()),
        "max_loss": args.max_loss, "seed": args.seed, "data": str(args.data),
        "evaluation_size": evaluation.correct.shape[1],
    }


def _path(key: str, names: list[str]) -> str:
    return " -> ".join(names[int(i)] for i in key.split(">"))


def _row(label: str, setting: str, point: dict, big: dict, names: list[str], paths: dict[str, float]) -> str:
    shares = " / ".join(f"{100 * s:.1f}" for s in point["exit_share"])
    routes = ", ".join(f"{_path(k, names)} {100 * v:.1f}" for k, v in sorted(paths.items()))
    loss = big["accuracy"] - point["accuracy"]
    return (f"| {label} | {setting} | {100 * point['accuracy']:.2f} | {100 * loss:+.2f} | "
            f"{point['macs_fraction']:.3f} | {1 / point['macs_fraction']:.2f}x | {shares} | {routes} |")


def _tables(dataset: str, a: dict) -> list[str]:
    names = [n["name"] for n in a["networks"]]
    big = a["singles"][-1]
    lines = [f"## {dataset}", "", "| network | checkpoint | kind | MACs | MACs / big | accuracy % (evaluation half) |",
             "|---|---|---|---|---|---|"]
    for n, single in zip(a["networks"], a["singles"]):
        lines.append(f"| {n['name']} | `{n['checkpoint']}` | {n['kind']} | {n['macs'] / 1e6:.1f} M | "
                     f"{single['macs_fraction']:.3f} | {100 * n['accuracy']:.2f} |")
    lines += ["", f"Operating points at <= {100 * a['max_loss']:g} % accuracy loss, chosen on the calibration half, "
              f"measured on the evaluation half ({a['evaluation_size']} images); speed-up = big MACs / mean MACs.", "",
              "| policy | setting | accuracy % | loss vs always-big (pp) | mean MACs / big | speed-up | "
              f"frames answered by {' / '.join(names)} % | paths % |", "|---|---|---|---|---|---|---|---|",
              _row("always big", "-", big, big, names, {str(len(names) - 1): 1.0})]
    for key, label in POLICIES.items():
        s = a["operating"][key]
        setting = "lambda" if key == "learned" else "MSP >="
        lines.append("| " + label + " | none within the loss |" + " |" * 6 if s is None else
                     _row(label, f"{setting} {s['setting']:.3g}", s["evaluation"], big, names, s["path_share"]))
    lines += [_row("soft oracle (cheapest correct path)", "-", a["oracle"], big, names, a["oracle"]["path_share"]), "",
              "Speed-up read off the evaluation-half curves (the fewest mean MACs among the settings that reach "
              "the accuracy there):", "",
              "| policy | " + " | ".join(f"<= {100 * d:g} % loss" for d in LOSSES) + " |",
              "|" + "---|" * (1 + len(LOSSES))]
    for key, label in POLICIES.items():
        points = [Point(**s["evaluation"]) for s in a["curves"][key]]
        macs = [macs_at_accuracy(points, big["accuracy"] - d) for d in LOSSES]
        lines.append(f"| {label} | " + " | ".join("n/a" if m is None else f"{1 / m:.2f}x" for m in macs) + " |")
    return lines + ["", f"![cascade](cascade_{dataset}.png)", ""]


def _plot(dataset: str, a: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label in POLICIES.items():
        points = [s["evaluation"] for s in a["curves"][key]]
        points.sort(key=lambda p: p["macs_fraction"])
        ax.plot([p["macs_fraction"] for p in points], [100 * p["accuracy"] for p in points], marker=".", label=label)
    x, y = [s["macs_fraction"] for s in a["singles"]], [100 * s["accuracy"] for s in a["singles"]]
    ax.scatter(x, y, marker="s", s=40, color="black", label="each network alone")
    for n, xi, yi in zip(a["networks"], x, y):
        ax.annotate(n["name"], (xi, yi), textcoords="offset points", xytext=(5, -10), fontsize=7)
    big = a["singles"][-1]
    ax.axhline(100 * big["accuracy"], color="grey", linestyle="--", linewidth=0.8, label="always big")
    ax.axhline(100 * (big["accuracy"] - a["max_loss"]), color="grey", linestyle=":", linewidth=0.8,
               label=f"always big - {100 * a['max_loss']:g} %")
    ax.scatter([a["oracle"]["macs_fraction"]], [100 * a["oracle"]["accuracy"]], marker="*", s=140, color="red",
               label="soft oracle")
    ax.set(xlabel="mean MACs / big network MACs", ylabel="accuracy % (evaluation half)",
           title=f"{dataset}: network selection over {' -> '.join(n['name'] for n in a['networks'])}")
    save_plot(fig, path, [ax], legend_size=7)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python experiments/cascade_report.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="image-folder zip or directory with a test/ split")
    p.add_argument("--networks", nargs="+", required=True, help="checkpoints (last.pt) by rising cost: little ... big")
    p.add_argument("--names", nargs="+", help="one name per network (default: each checkpoint's folder name)")
    p.add_argument("--dataset", help="name in the report (default: the data's parent folder name)")
    p.add_argument("--out", default="docs/results")
    p.add_argument("--max-loss", type=float, default=0.01, help="accuracy loss vs always-big of the operating points")
    p.add_argument("--test-limit", type=int, default=0, help="use a subset of the test split")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration/evaluation split")
    args = p.parse_args(argv)
    if len(args.networks) < 2:
        p.error("a cascade needs two or more --networks")
    if args.names is not None and len(args.names) != len(args.networks):
        p.error("--names needs one name per network")
    if not 0 <= args.max_loss < 1:
        p.error("--max-loss must be in [0, 1)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad data or checkpoints end it with one ``error:`` line (exit 2)."""
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.time()
    try:
        analysis = _analyse(args)
    except (FileNotFoundError, ValueError, KeyError, pickle.UnpicklingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dataset = args.dataset or Path(args.data).resolve().parent.name
    analysis["command"] = "python experiments/cascade_report.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    analysis["wall_s"] = time.time() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "cascade.json"
    report = json.loads(store.read_text()) if store.is_file() else {}
    report[dataset] = analysis
    store.write_text(json.dumps(report, indent=1))
    lines = ["# Network selection over a cascade: generated tables", "",
             "Generated by `python experiments/cascade_report.py` (commands in `cascade.json`). "
             "Bolukbasi et al. (2017) network selection: after each network a learned policy returns its answer, "
             "goes to the next network or jumps to the last; a path costs the MACs of the networks it evaluated. "
             "Policies and thresholds are learned on the calibration half of the test split; every number is "
             "measured on the other half.", ""]
    for name, entry in sorted(report.items()):
        _plot(name, entry, out / f"cascade_{name}.png")
        lines += _tables(name, entry)
    (out / "cascade_tables.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
