"""CLI: tables and plots of early exits (PTEEnet, decision gates, threshold rules, learned policy).

    python experiments/exits_report.py --runs runs/exits --data ../shared/datasets/cifar10/cifar10_jpg.zip --out docs/results

For every ``<runs>/<set>/`` with ``pteenet*/`` and ``gates_*/`` checkpoints (``training.exits_run``):
thresholds and policies are tuned on the calibration half of the test split and every number is
measured on the evaluation half. Writes ``<out>/early_exits_tables.md``, ``<out>/early_exits.json``
and accuracy-vs-MACs PNGs ``<out>/early_exits_<set>.png``, ``<out>/early_exits_gates_<set>.png``.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)

from anytime_perception.data.image_folder import load_image_folder  # noqa: E402
from anytime_perception.training.exits_run import load_exit_net  # noqa: E402
from exit_analysis import (Point, macs_at_accuracy, oracle_point, policy_curve, records_of,  # noqa: E402
                            threshold_curve)
from anytime_perception.eval.plots import save_plot  # noqa: E402

__all__ = ["main"]

RULE_NAMES = {"msp": "MSP", "gap": "gap (top-1 - top-2)", "entropy": "negative entropy",
              "confidence": "PTEEnet confidence head", "policy": "learned policy (Bolukbasi)",
              "distance": "d-gate distance"}
DROP_COLUMNS = (0.005, 0.01, 0.02, 0.03)


def _analyse(run: Path, data: str, seed: int) -> dict:
    """Curves of every rule for one exits checkpoint."""
    net, meta = load_exit_net(run / "last.pt")
    test = load_image_folder(data, "test", meta["input_size"])
    halves = [records_of(net, h, tuple(meta["mean"]), tuple(meta["std"]), meta["stage_macs"]) for h in test.halves(seed)]
    calibration, evaluation = halves
    backbone = float(meta["backbone_macs"])
    own = "confidence" if meta["kind"] == "branch" else "distance"
    rules = ("msp", "gap", "entropy", own)
    curves = {rule: threshold_curve(rule, calibration, evaluation, backbone) for rule in rules}
    if meta["kind"] == "branch":
        curves["policy"] = policy_curve(calibration, evaluation, backbone)
    result = json.loads((run / "result.json").read_text())
    return {"run": run.name, "meta": {k: meta[k] for k in ("depth", "points", "kind", "lam", "loss", "placement",
                                                             "stage_macs", "backbone_macs")},
            "backbone_accuracy": float(evaluation.correct[-1].mean()),
            "exit_accuracy": [float(a) for a in evaluation.correct.mean(1)],
            "exit_cost": [float(c) / backbone for c in evaluation.cumulative_macs],
            "oracle": oracle_point(evaluation, backbone), "curves": curves, "train_wall_s": result["wall_s"],
            "command": result["command"]}


def _cell(points: list[Point], accuracy: float) -> str:
    macs = macs_at_accuracy(points, accuracy)
    return "n/a" if macs is None else f"{100 * (1 - macs):.1f} %"


def _pteenet_table(analyses: list[dict]) -> list[str]:
    lines = ["| run | placement | lambda | exits after units | exit accuracy % (eval half) | cost of each exit | "
             + " | ".join(f"saving at <= {100 * d:g} % drop" for d in DROP_COLUMNS) + " |",
             "|" + "---|" * (6 + len(DROP_COLUMNS))]
    for a in analyses:
        m, base = a["meta"], a["backbone_accuracy"]
        cells = [_cell(a["curves"]["confidence"], base - d) for d in DROP_COLUMNS]
        lines.append(f"| {a['run']} | {m['placement']} | {m['lam']} | {m['points']} | "
                     f"{' / '.join(f'{100 * x:.1f}' for x in a['exit_accuracy'])} | "
                     f"{' / '.join(f'{x:.2f}' for x in a['exit_cost'])} | " + " | ".join(cells) + " |")
    return lines


def _rules_table(a: dict) -> list[str]:
    base = a["backbone_accuracy"]
    lines = ["| rule | " + " | ".join(f"MACs at <= {100 * d:g} % drop" for d in DROP_COLUMNS)
             + " | " + " | ".join(f"saving vs MSP at {100 * d:g} %" for d in DROP_COLUMNS) + " |",
             "|" + "---|" * (1 + 2 * len(DROP_COLUMNS))]
    msp = [macs_at_accuracy(a["curves"]["msp"], base - d) for d in DROP_COLUMNS]
    for rule, points in a["curves"].items():
        macs = [macs_at_accuracy(points, base - d) for d in DROP_COLUMNS]
        shown = ["n/a" if m is None else f"{m:.3f}" for m in macs]
        saving = ["n/a" if m is None or s is None else f"{100 * (1 - m / s):+.1f} %" for m, s in zip(macs, msp)]
        lines.append(f"| {RULE_NAMES[rule]} | " + " | ".join(shown) + " | " + " | ".join(saving) + " |")
    o = a["oracle"]
    lines.append(f"| soft oracle (cheapest correct exit) | {o.macs_fraction:.3f} at {100 * o.accuracy:.2f} % accuracy"
                 + " |" * (2 * len(DROP_COLUMNS) - 1) + " |")
    return lines


def _gates_table(gates: list[dict]) -> list[str]:
    """Hinge vs cross-entropy gates at equal accuracy (the d-gate rule: max distance to a boundary)."""
    lines = ["| gates | exits after units | gate accuracy % per exit | "
             + " | ".join(f"MACs at <= {100 * d:g} % drop" for d in DROP_COLUMNS) + " |",
             "|" + "---|" * (3 + len(DROP_COLUMNS))]
    for a in gates:
        base = a["backbone_accuracy"]
        macs = [macs_at_accuracy(a["curves"]["distance"], base - d) for d in DROP_COLUMNS]
        lines.append(f"| {a['meta']['loss']} | {a['meta']['points']} | "
                     f"{' / '.join(f'{100 * x:.1f}' for x in a['exit_accuracy'][:-1])} | "
                     + " | ".join("n/a" if m is None else f"{m:.3f}" for m in macs) + " |")
    return lines


def _plot(analyses: list[dict], title: str, path: Path, rules: tuple[str, ...] | None = None) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for a in analyses:
        prefix = f"{a['run']}: " if len(analyses) > 1 else ""
        for rule, points in a["curves"].items():
            if rules is not None and rule not in rules:
                continue
            ax.plot([p.macs_fraction for p in points], [100 * p.accuracy for p in points], marker=".",
                    label=prefix + RULE_NAMES[rule])
        ax.scatter([a["oracle"].macs_fraction], [100 * a["oracle"].accuracy], marker="*", s=120,
                   label=prefix + "soft oracle")
    base = analyses[0]["backbone_accuracy"]
    ax.axhline(100 * base, color="grey", linestyle="--", linewidth=0.8, label="backbone")
    ax.set(xlabel="mean MACs / backbone MACs", ylabel="accuracy % (evaluation half)", title=title)
    save_plot(fig, path, [ax], legend_size=7)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python experiments/exits_report.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/exits")
    p.add_argument("--data", required=True)
    p.add_argument("--out", default="docs/results")
    p.add_argument("--default", nargs="+", default=["pteenet"], help="runs of each set whose rules are compared")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration/evaluation split")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Early exits: generated tables", "",
             "Generated by `python experiments/exits_report.py` "
             f"(`--runs {args.runs} --data {args.data}`). Thresholds and policies are tuned on the calibration "
             "half of the CIFAR-10 test split, every number is measured on the other half (5,000 images). "
             "Savings are `1 - mean MACs / backbone MACs` (branch costs included); drops are vs the backbone "
             "on the same half.", ""]
    report = {}
    for run_set in sorted(d for d in Path(args.runs).iterdir() if (d / "backbone").is_dir()):
        runs = sorted(r for r in run_set.iterdir() if (r / "result.json").is_file() and r.name != "backbone")
        analyses = {r.name: _analyse(r, args.data, args.seed) for r in runs}
        if not analyses:
            continue
        report[run_set.name] = analyses
        pteenet = [a for name, a in analyses.items() if name.startswith("pteenet")]
        gates = [a for name, a in analyses.items() if name.startswith("gates")]
        lines += [f"## {run_set.name}", "", f"Backbone accuracy on the evaluation half: "
                  f"{100 * next(iter(analyses.values()))['backbone_accuracy']:.2f} %.", ""]
        if pteenet:
            lines += ["### PTEEnet branches (confidence head rule)", "", *_pteenet_table(pteenet), ""]
        for name in (n for n in args.default if n in analyses):
            png = f"early_exits_{run_set.name}_{name}.png"
            lines += [f"### Every rule on the same exits ({name})", "", *_rules_table(analyses[name]), "",
                      f"![rules]({png})", ""]
            _plot([analyses[name]], f"{run_set.name} {name}: exit rules on the same exits", out / png)
        for a in gates:
            lines += [f"### Decision gates: {a['run']} ({a['meta']['loss']} loss)", "", *_rules_table(a), ""]
        if gates:
            lines += ["### Decision gates: hinge vs cross-entropy at equal accuracy", "", *_gates_table(gates), ""]
            _plot(gates, f"{run_set.name}: decision gates, hinge vs cross-entropy", out / f"early_exits_gates_{run_set.name}.png", ("distance", "msp"))
            lines += [f"![gates](early_exits_gates_{run_set.name}.png)", ""]
    (out / "early_exits_tables.md").write_text("\n".join(lines) + "\n")
    serialisable = {s: {r: {**a, "oracle": asdict(a["oracle"]),
                            "curves": {k: [asdict(p) for p in v] for k, v in a["curves"].items()}}
                        for r, a in runs.items()} for s, runs in report.items()}
    (out / "early_exits.json").write_text(json.dumps(serialisable, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
