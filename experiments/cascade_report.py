"""CLI: network selection over a cascade of trained classifiers (Bolukbasi et al., 2017).

    python experiments/cascade_report.py --data ../shared/datasets/cifar10/cifar10_jpg.zip \\
        --networks runs/big_little/cifar10/little_<name>/last.pt runs/exits/cifar10_resnet20/backbone/last.pt \\
                   runs/big_little/cifar10/resnet56/last.pt --out docs/results
    python experiments/cascade_report.py --render-only --out docs/results   # tables and plots from cascade.json

Networks are given by rising cost (little, middle, big): checkpoints of any kind ``cascade_analysis``
loads, or exported model directories (their ONNX full graph). Policies (one cost weight lambda per
point) and the single max-softmax threshold of the myopic baseline are learned on the calibration
half of the test split, every number is measured on the other half. The operating point at
``--max-loss`` is chosen on the calibration half (the cheapest setting within the loss there).

Speed-ups are given in MACs (the last network's over the mean per input) and in measured CPU time
(``--time-runs`` interleaved single-image runs of every network at one thread, the same run; a
path's time is the sum of its networks'). The soft oracle is the paper's by default (an early exit
only where every later network is right: it never fixes the last network's errors);
``--oracle any_correct`` adds ours (the cheapest path with a right answer) as a labelled row. A
cascade whose networks do not rise in accuracy as well as in cost is flagged: its speed-ups are
against a last network that is not the best one. Adds the dataset to ``<out>/cascade.json``
(other datasets kept) and writes, for all of them, ``<out>/cascade_tables.md`` and
``<out>/cascade_<dataset>.png`` (accuracy vs mean MACs).
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

from anytime_perception.calibration.cascade import ORACLES, learn_cascade, path_outcome, rises, soft_oracle  # noqa: E402
from anytime_perception.data.image_folder import load_image_folder  # noqa: E402
from cascade_analysis import (learned_curve, load_network, myopic_curve, operating, path_time, point_of,  # noqa: E402
                              records_on, time_networks)
from exit_analysis import Point, macs_at_accuracy  # noqa: E402
from anytime_perception.eval.plots import save_plot  # noqa: E402

__all__ = ["main"]

LOSSES = (0.0, 0.005, 0.01, 0.02)  # accuracy losses of the speed-up table
POLICIES = {"learned": "learned policy (Bolukbasi)", "myopic": "myopic MSP threshold"}
ORACLE_LABELS = {"paper": "soft oracle, paper's (exit only where all later networks are right)",
                 "any_correct": "soft oracle, ours (`--oracle any_correct`: cheapest right path, fixes the big net's "
                                "errors)"}
NOT_MEASURED = "not measured in this session"
PAPER = [
    "## What the paper reports (Bolukbasi et al., ICML 2017; `../shared/papers/adaptive_networks_bolukbasi.txt`)",
    "",
    "Our copy is the abstract and the text with most numbers stripped; no table survives. Quoted:",
    "",
    "- abstract: \"up to a 2.8x speedup on state-of-the-art networks from the ImageNet image recognition challenge "
    "with minimal (<1%) loss of top5 accuracy\" (network selection over AlexNet -> GoogLeNet -> ResNet; the "
    "early-exit speed-ups and the numbers of the text were stripped);",
    "- soft oracle: it \"follows the network topology\", pays for the networks it evaluates, and \"can exit at a "
    "cheaper model only if all the latter models agree with the true label\" (stop words removed in our copy), "
    "to \"prevent the oracle from correcting mistakes made by the complex networks\";",
    "- \"the policy matches soft oracle performance in high budget regions\"; early-exit gains are \"marginal "
    "compared to network selection\";",
    "- times are measured (the copy's words, stop words stripped in conversion): \"measure network times using "
    "built-in tool caffe library server utilizes nvidia titan pascal cudnn\", \"reported times actual "
    "measurements including policy overhead\".",
    "",
    "Settings of ours against the paper's, one line each: data CIFAR-10 32x32 (paper: ImageNet 224x224, top-5); "
    "networks our little CNNs and CIFAR ResNets trained on this CPU (paper: pre-trained Caffe AlexNet, GoogLeNet, "
    "ResNet); policy data the calibration half of the test split (paper: the networks' training data); time one "
    "CPU thread, batch 1, policy overhead left out (paper: GPU, policy included).",
    "",
]


def _analyse(args: argparse.Namespace) -> dict:
    """Every curve and point of one dataset."""
    test = load_image_folder(args.data, "test")
    if args.test_limit:
        test = test.subset(args.test_limit, args.seed)
    names = args.names or [Path(c).parent.name for c in args.networks]
    networks = [load_network(c, n, test.images.shape[1]) for c, n in zip(args.networks, names)]
    halves = test.halves(args.seed)
    calibration, evaluation = (records_on(networks, h) for h in tqdm(halves, desc="halves"))
    curves = {"learned": learned_curve(calibration, evaluation), "myopic": myopic_curve(calibration, evaluation)}
    base = float(calibration.correct[-1].mean())
    chosen = {k: operating(c, base, args.max_loss) for k, c in curves.items()}
    oracles = {rule: soft_oracle(evaluation, rule) for rule in dict.fromkeys(("paper", *args.oracle))}
    times = time_networks(networks, halves[1], args.time_runs) if args.time_runs else None
    return {
        "networks": [{"name": n.name, "checkpoint": n.checkpoint, "kind": n.kind, "macs": n.macs,
                      "accuracy": float(evaluation.correct[i].mean()),
                      "calibration_accuracy": float(calibration.correct[i].mean())} for i, n in enumerate(networks)],
        "singles": [asdict(point_of(0.0, path_outcome(evaluation, (i,)), evaluation)) for i in range(len(networks))],
        "rising": rises(calibration.correct.mean(1), calibration.macs),
        "times_ms": times, "time_runs": args.time_runs,
        "time_setting": "median of interleaved single-image runs, 1 thread (torch or ONNX Runtime), this machine",
        **{"oracle" if rule == "paper" else f"oracle_{rule}": {**asdict(point_of(0.0, o, evaluation)),
                                                               "path_share": o.path_share, "rule": rule}
           for rule, o in oracles.items()},
        "curves": {k: [asdict(s) for s in c] for k, c in curves.items()},
        "operating": {k: None if s is None else asdict(s) for k, s in chosen.items()},
        "policy": (None if chosen["learned"] is None
                   else learn_cascade(calibration, chosen["learned"].setting).to_dict()),
        "max_loss": args.max_loss, "seed": args.seed, "data": str(args.data),
        "evaluation_size": evaluation.correct.shape[1],
    }


def _path(key: str, names: list[str]) -> str:
    return " -> ".join(names[int(i)] for i in key.split(">"))


def _time_cells(paths: dict[str, float], times: list[float] | None) -> str:
    """Mean time per input and its speed-up against always-big, or why there is none."""
    if not times:
        return f"{NOT_MEASURED} | {NOT_MEASURED}"
    mean = path_time(paths, times)
    return f"{mean:.3f} ms | {times[-1] / mean:.2f}x"


def _row(label: str, setting: str, point: dict, big: dict, names: list[str], paths: dict[str, float],
         times: list[float] | None) -> str:
    shares = " / ".join(f"{100 * s:.1f}" for s in point["exit_share"])
    routes = ", ".join(f"{_path(k, names)} {100 * v:.1f}" for k, v in sorted(paths.items()))
    loss = big["accuracy"] - point["accuracy"]
    return (f"| {label} | {setting} | {100 * point['accuracy']:.2f} | {100 * loss:+.2f} | "
            f"{point['macs_fraction']:.3f} | {1 / point['macs_fraction']:.2f}x | {_time_cells(paths, times)} | "
            f"{shares} | {routes} |")


def _rising(a: dict) -> bool:
    """The stored flag, or for entries written before it, from the stored accuracies and MACs."""
    if "rising" in a:
        return bool(a["rising"])
    return rises([n["calibration_accuracy"] for n in a["networks"]], [n["macs"] for n in a["networks"]])


def _tables(dataset: str, a: dict) -> list[str]:
    names = [n["name"] for n in a["networks"]]
    big = a["singles"][-1]
    times = a.get("times_ms")
    lines = [f"## {dataset}", "", "| network | checkpoint | kind | MACs | MACs / big | CPU ms (1 thread, batch 1) | "
             "accuracy % (evaluation half) |", "|---|---|---|---|---|---|---|"]
    for i, (n, single) in enumerate(zip(a["networks"], a["singles"])):
        ms = f"{times[i]:.3f}" if times else NOT_MEASURED
        lines.append(f"| {n['name']} | `{n['checkpoint']}` | {n['kind']} | {n['macs'] / 1e6:.1f} M | "
                     f"{single['macs_fraction']:.3f} | {ms} | {100 * n['accuracy']:.2f} |")
    if a.get("note"):
        lines += ["", f"Note: {a['note']}."]
    if not _rising(a):
        best = max(range(len(names)), key=lambda i: a["networks"][i]["calibration_accuracy"])
        lines += ["", "**Flagged: the networks do not rise in accuracy as they rise in cost** (calibration half: "
                  + " -> ".join(f"{n['name']} {100 * n['calibration_accuracy']:.1f} %" for n in a["networks"])
                  + f"). The most accurate is {names[best]}, not the last network, so the speed-ups below are "
                  "against a weaker network and are not speed-ups at the cascade's best accuracy; a policy that "
                  "\"gains\" accuracy here mostly avoids the last network."]
    lines += ["", f"Operating points at <= {100 * a['max_loss']:g} % accuracy loss, chosen on the calibration half, "
              f"measured on the evaluation half ({a['evaluation_size']} images); speed-up = big / mean per input, in "
              "MACs and in measured CPU time (each path: the sum of its networks' times).", "",
              "| policy | setting | accuracy % | loss vs always-big (pp) | mean MACs / big | speed-up (MACs) | "
              f"mean CPU time | speed-up (time) | frames answered by {' / '.join(names)} % | paths % |",
              "|---|---|---|---|---|---|---|---|---|---|",
              _row("always big", "-", big, big, names, {str(len(names) - 1): 1.0}, times)]
    for key, label in POLICIES.items():
        s = a["operating"][key]
        setting = "lambda" if key == "learned" else "MSP >="
        lines.append("| " + label + " | none within the loss |" + " |" * 8 if s is None else
                     _row(label, f"{setting} {s['setting']:.3g}", s["evaluation"], big, names, s["path_share"], times))
    for rule in ORACLES:
        key = "oracle" if rule == "paper" else f"oracle_{rule}"
        o = a.get(key)
        lines.append(f"| {ORACLE_LABELS[rule]} | - | {NOT_MEASURED} |" + " |" * 7 if o is None else
                     _row(ORACLE_LABELS[rule], "-", o, big, names, o["path_share"], times))
    lines += ["", "Speed-up read off the evaluation-half curves (the fewest mean MACs, or the least mean time, among "
              "the settings that reach the accuracy there):", "",
              "| policy | measure | " + " | ".join(f"<= {100 * d:g} % loss" for d in LOSSES) + " |",
              "|" + "---|" * (2 + len(LOSSES))]
    for key, label in POLICIES.items():
        points = [Point(**s["evaluation"]) for s in a["curves"][key]]
        macs = [macs_at_accuracy(points, big["accuracy"] - d) for d in LOSSES]
        lines.append(f"| {label} | MACs | " + " | ".join("n/a" if m is None else f"{1 / m:.2f}x" for m in macs) + " |")
        if times:
            timed = [Point(p.setting, p.accuracy, path_time(s["path_share"], times) / times[-1], p.exit_share)
                     for p, s in zip(points, a["curves"][key])]
            fractions = [macs_at_accuracy(timed, big["accuracy"] - d) for d in LOSSES]
            lines.append(f"| {label} | CPU time | "
                         + " | ".join("n/a" if m is None else f"{1 / m:.2f}x" for m in fractions) + " |")
        else:
            lines.append(f"| {label} | CPU time | " + " | ".join(NOT_MEASURED for _ in LOSSES) + " |")
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
    for key, colour, label in (("oracle", "red", "soft oracle (paper's)"),
                               ("oracle_any_correct", "orange", "soft oracle (ours, any correct)")):
        if a.get(key):
            ax.scatter([a[key]["macs_fraction"]], [100 * a[key]["accuracy"]], marker="*", s=140, color=colour,
                       label=label)
    ax.set(xlabel="mean MACs / big network MACs", ylabel="accuracy % (evaluation half)",
           title=f"{dataset}: network selection over {' -> '.join(n['name'] for n in a['networks'])}")
    save_plot(fig, path, [ax], legend_size=7)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python experiments/cascade_report.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="image-folder zip or directory with a test/ split")
    p.add_argument("--render-only", action="store_true",
                   help="no networks: write the tables and plots again from <out>/cascade.json")
    p.add_argument("--networks", nargs="+", help="checkpoints (last.pt) or exported model directories by rising cost: "
                                                "little ... big")
    p.add_argument("--names", nargs="+", help="one name per network (default: each checkpoint's folder name)")
    p.add_argument("--dataset", help="name in the report (default: the data's parent folder name)")
    p.add_argument("--out", default="docs/results")
    p.add_argument("--max-loss", type=float, default=0.01, help="accuracy loss vs always-big of the operating points")
    p.add_argument("--test-limit", type=int, default=0, help="use a subset of the test split")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration/evaluation split")
    p.add_argument("--time-runs", type=int, default=200,
                   help="single-image CPU timing runs per network (0: do not time)")
    p.add_argument("--oracle", nargs="*", choices=ORACLES, default=["paper"],
                   help="soft oracles to report besides the paper's (any_correct: ours)")
    args = p.parse_args(argv)
    if args.render_only:
        return args
    if not args.data or not args.networks:
        p.error("--data and --networks are required (or --render-only)")
    if len(args.networks) < 2:
        p.error("a cascade needs two or more --networks")
    if args.names is not None and len(args.names) != len(args.networks):
        p.error("--names needs one name per network")
    if not 0 <= args.max_loss < 1:
        p.error("--max-loss must be in [0, 1)")
    if args.time_runs < 0:
        p.error("--time-runs must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad data or checkpoints end it with one ``error:`` line (exit 2)."""
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    store = out / "cascade.json"
    report = json.loads(store.read_text()) if store.is_file() else {}
    if args.render_only:
        if not report:
            print(f"error: {store}: nothing to render", file=sys.stderr)
            return 2
        return _render(report, out)
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
    out.mkdir(parents=True, exist_ok=True)
    report[dataset] = analysis
    store.write_text(json.dumps(report, indent=1))
    return _render(report, out)


def _render(report: dict, out: Path) -> int:
    """``cascade_tables.md`` and one plot per dataset of ``report``."""
    lines = ["# Network selection over a cascade: generated tables", "",
             "Generated by `python experiments/cascade_report.py` (commands in `cascade.json`). "
             "Bolukbasi et al. (2017) network selection: after each network a learned policy returns its answer, "
             "goes to the next network or jumps to the last; a path costs the MACs (and the measured CPU time) of "
             "the networks it evaluated. Policies and thresholds are learned on the calibration half of the test "
             "split; every number is measured on the other half. Each row names what it used: the paper's soft "
             "oracle is the default, ours is labelled; \"" + NOT_MEASURED + "\" marks what the stored entry lacks "
             "(entries written before the option existed).", "", *PAPER]
    for name, entry in sorted(report.items()):
        _plot(name, entry, out / f"cascade_{name}.png")
        lines += _tables(name, entry)
    (out / "cascade_tables.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
